"""Parsing FHIR search parameter values (FHIR R4 §3.1.1 "Search"): tokens, dates with prefixes, quantities and
references, and the refusal every bad value gets (HTTP 400 with an OperationOutcome naming the parameter).

Rules implemented:
- a parameter given several times is AND, the comma-separated values of one occurrence are OR (§3.1.1.3);
- ``system|code``, ``|code`` (no system), ``code`` (any system) and ``system|`` (any code of the system) for
  tokens (§3.1.1.4.7);
- dates: the prefixes eq, ne, gt, lt, ge, le, sa and eb, each against the range the value's precision implies
  (``2026`` is the whole year); a value without a zone is Beijing time, the server's (codes/calendar.py);
- numbers and quantities: ``[prefix]number|system|code``; ``eq`` is the range of the value's precision
  (``5.4`` is 5.35 ≤ x < 5.45).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from codes.calendar import BEIJING

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")


class SearchError(Exception):
    """A request the server understood and refuses: answered as an OperationOutcome with ``status``."""

    def __init__(self, message: str, expression: str | None = None, status: int = 400,
                 code: str = "invalid") -> None:
        super().__init__(message)
        self.message, self.expression, self.status, self.code = message, expression, status, code


@dataclass(frozen=True)
class Token:
    system: str | None  # None: any system; "": explicitly no system
    code: str | None  # None: any code of ``system``


@dataclass(frozen=True)
class DateRange:
    """``prefix`` applied to the instant range [``low``, ``high``) the value's precision implies."""

    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True)
class Quantity:
    prefix: str
    low: float  # the range the number's precision implies
    high: float
    value: float
    system: str | None
    code: str | None


def split_values(raw: str) -> list[str]:
    r"""One occurrence's OR-ed values: split on commas that are not escaped (``\,``)."""
    return [p.replace("\\,", ",") for p in re.split(r"(?<!\\),", raw)]


def token(raw: str, name: str) -> Token:
    if raw == "":
        raise SearchError(f"{name}: an empty value", name)
    if "|" not in raw:
        return Token(None, raw)
    system, code = raw.split("|", 1)
    return Token(system, code or None)


def reference(raw: str, name: str, resource_type: str) -> str:
    """The id of ``Type/id``, ``id`` or an absolute URL ending in ``Type/id``."""
    value = raw.rstrip("/")
    if "/" in value:
        kind, ident = value.rsplit("/", 2)[-2:]
        if kind != resource_type:
            raise SearchError(f"{name}: a reference to {resource_type} is expected, not {raw!r}", name)
        value = ident
    if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", value):
        raise SearchError(f"{name}: {raw!r} is not a {resource_type} id", name)
    return value


_DATE = re.compile(r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)"
                   r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?")


def _prefixed(raw: str) -> tuple[str, str]:
    if raw[:2] in PREFIXES and len(raw) > 2 and not raw[:2].isdigit():
        return raw[:2], raw[2:]
    if raw[:2].isalpha():
        raise SearchError(f"unsupported prefix {raw[:2]!r} (supported: {', '.join(PREFIXES)})")
    return "eq", raw


def date_range(raw: str, name: str) -> DateRange:
    """A FHIR date search value: its prefix and the instant range its precision covers."""
    try:
        prefix, text = _prefixed(raw)
    except SearchError as exc:
        raise SearchError(f"{name}: {exc.message}", name) from None
    found = _DATE.fullmatch(text)
    if found is None:
        raise SearchError(f"{name}: {raw!r} is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime)", name)
    try:
        year = int(found["y"])
        if found["m"] is None:
            low, high = datetime(year, 1, 1, tzinfo=BEIJING), datetime(year + 1, 1, 1, tzinfo=BEIJING)
        elif found["d"] is None:
            month = int(found["m"])
            low = datetime(year, month, 1, tzinfo=BEIJING)
            high = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=BEIJING)
        elif found["time"] is None:
            low = datetime.combine(date(year, int(found["m"]), int(found["d"])), datetime.min.time(), BEIJING)
            high = low + timedelta(days=1)
        else:
            zone = found["tz"] or "+08:00"  # no zone: the server's, Beijing time
            low = datetime.fromisoformat(f"{found['y']}-{found['m']}-{found['d']}T{found['time']}"
                                         f"{'+00:00' if zone == 'Z' else zone}")
            clock = found["time"]
            step = (timedelta(minutes=1) if len(clock) == 5 else timedelta(seconds=1) if len(clock) == 8
                    else timedelta(microseconds=10 ** (6 - min(6, len(clock) - 9))))
            high = low + step
    except ValueError as exc:
        raise SearchError(f"{name}: {raw!r} is not a valid date ({exc})", name) from None
    return DateRange(prefix, low, high)


def quantity(raw: str, name: str) -> Quantity:
    try:
        prefix, text = _prefixed(raw)
    except SearchError as exc:
        raise SearchError(f"{name}: {exc.message}", name) from None
    number, system, code = (text.split("|", 2) + ["", ""])[:3]
    try:
        exact = Decimal(number)
    except InvalidOperation:
        raise SearchError(f"{name}: {number!r} is not a number", name) from None
    if not exact.is_finite():
        raise SearchError(f"{name}: {number!r} is not a number", name)
    half = Decimal(5).scaleb(exact.as_tuple().exponent - 1)  # half a unit of the last digit given
    return Quantity(prefix, float(exact - half), float(exact + half), float(exact), system or None, code or None)


def count(raw: str, name: str, maximum: int) -> int:
    if not raw.isdigit():
        raise SearchError(f"{name}: {raw!r} is not a non-negative integer", name)
    return min(int(raw), maximum)

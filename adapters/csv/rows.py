"""One data row → the observation it holds plus the report-level columns it repeats, or every reason it is bad.

- A row is bad when it has the wrong column count (cells beyond the header that are all empty are allowed:
  a trailing delimiter), or when any mapped cell fails: empty or invalid resident ID (GB 11643), empty or
  over-long report number or item code, unknown status, flag, sex or value type (the profile's
  vocabularies), a report time or date that is missing or not in the profile's formats, a version that is
  not a positive whole number, a result that is empty (unless the status is cancelled or the value type
  says none) or not a number although a unit or a numeric value type says it must be.
- Version: the version column when the profile maps one, otherwise the status rank (docs/rules.md,
  "Statuses and versions").
- Reference range: the low and high columns when mapped, else the range text split at the profile's
  separators (``3.5-5.3``, ``3.5~5.3``, full-width forms); ``<5.2`` gives a high bound, ``>=40`` a low one;
  a reversed range gives none. The text is always kept.
- A row holding a NUL character is bad as a whole (nothing is read from it); its report number is taken only
  when that cell itself is clean.
- The reason a row is bad never quotes the resident ID (docs/rules.md, "Privacy").
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any

from adapters.csv.decode import Table
from adapters.csv.profile import Profile, lookup_key
from adapters.report import Code, LabObservation, Value
from schemas.resident_id import InvalidResidentId, normalize_resident_id
from schemas.statuses import STATUS_RANK

#: The code system of the LOINC column's codes (FHIR's URI for LOINC).
LOINC = "http://loinc.org"
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(rf"^(<=|>=|<|>|≤|≥)?\s*({_NUMBER})$")
_COMPARATOR = {"≤": "<=", "≥": ">="}


@dataclass
class Row:
    """One parsed data row (one observation plus the report-level columns it repeats)."""

    line: int
    report_id: str
    resident_id: str  # normalized; held in memory only, pseudonymized by the pipeline
    status: str
    version: int
    reported_at: datetime
    collected_at: datetime | None
    sex: str | None
    birth_year: int | None
    panel: Code | None
    specimen_type: str | None
    specimen_id: str | None
    observation: LabObservation


@dataclass
class BadRow:
    """A row that cannot be used, with every reason found in it (scrubbed of the resident ID)."""

    line: int
    report_id: str | None
    reason: str
    aligned: bool = True  # False: wrong column count, so no cell can be trusted (or copied anywhere)


class _Cells:
    """The cells of one row by field, collecting the errors found in them as ``header: message``."""

    def __init__(self, table: Table, cells: list[str], line: int, profile: Profile) -> None:
        self.table, self.cells, self.line, self.profile = table, cells, line, profile
        self.errors: list[str] = []
        width = len(cells)
        self.values = {name: cells[i].strip() if i < width else "" for name, i in table.columns.items()}

    def get(self, name: str) -> str:
        return self.values.get(name, "")

    def header(self, name: str) -> str:
        i = self.table.columns.get(name)
        return self.table.header[i].strip() if i is not None else self.profile.header(name)

    def header_at(self, index: int) -> str:
        """The header of column ``index`` (``#n``, its 1-based number, when it has none)."""
        header = self.table.header[index].strip() if index < len(self.table.header) else ""
        return header or f"#{index + 1}"

    def error(self, name: str, message: str) -> None:
        self.errors.append(f"{self.header(name)}: {message}")


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _number(text: str) -> tuple[str | None, float] | None:
    """(comparator, number) of ``5.6``, ``<0.5``, ``≥40``, full-width digits included; None if not a number."""
    match = _QUANTITY.match(unicodedata.normalize("NFKC", text).strip())
    if not match:
        return None
    comparator = match.group(1)
    return _COMPARATOR.get(comparator, comparator) if comparator else None, float(match.group(2))


#: Formats whose zero-padded form ``datetime.fromisoformat`` reads to the same value as ``strptime``, and
#: many times faster; other spellings under them (``2025-3-1``) still go through ``strptime``.
_ISO_SHAPES = {"%Y-%m-%d": re.compile(r"\d{4}-\d\d-\d\d"),
               "%Y-%m-%d %H:%M": re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"),
               "%Y-%m-%d %H:%M:%S": re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")}


def _moment(text: str, formats: Sequence[str], zone: tzinfo) -> datetime | None:
    """The instant in the first of ``formats`` (else ISO 8601) that fits; an offset-less time is in ``zone``."""
    text = unicodedata.normalize("NFKC", text).strip()
    for fmt in formats:
        shape = _ISO_SHAPES.get(fmt)
        try:
            moment = (datetime.fromisoformat(text) if shape is not None and shape.fullmatch(text)
                      else datetime.strptime(text, fmt))
            break
        except ValueError:
            continue
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment


#: :func:`_moment` remembering the last report and collection times it read: the rows of one report repeat
#: them (birth dates are not kept: personal data stays in no cache).
_report_moment = lru_cache(maxsize=512)(_moment)


def _lookup(cells: _Cells, name: str, vocabulary: dict[str, str], raw: str) -> str | None:
    value = vocabulary.get(lookup_key(raw))
    if value is None:
        known = ", ".join(sorted(vocabulary)[:12])
        cells.error(name, f"{_quote(raw)} is not a known value (the profile knows: {known})")
    return value


@lru_cache(maxsize=64)
def _range_pattern(separators: tuple[str, ...]) -> re.Pattern[str] | None:
    """``low SEP high`` for the profile's separators (longest first), or None when it has none."""
    alternatives = "|".join(re.escape(unicodedata.normalize("NFKC", s))
                            for s in sorted(separators, key=len, reverse=True))
    return re.compile(rf"({_NUMBER})\s*(?:{alternatives})\s*({_NUMBER})") if alternatives else None


def _reference(cells: _Cells, profile: Profile) -> dict[str, Any]:
    text = cells.get("reference_range")
    low = high = None
    if text:
        norm = unicodedata.normalize("NFKC", text).strip()
        pattern = _range_pattern(profile.range_separators)
        pair = pattern.fullmatch(norm) if pattern else None
        single = _number(norm)
        if pair:
            a, b = float(pair.group(1)), float(pair.group(2))
            if a <= b:
                low, high = a, b
        elif single and single[0]:
            if single[0].startswith("<"):
                high = single[1]
            else:
                low = single[1]
    for name in ("ref_low", "ref_high"):
        raw = cells.get(name)
        if raw:
            parsed = _number(raw)
            if parsed is None or parsed[0]:
                cells.error(name, f"{_quote(raw)} is not a number")
            elif name == "ref_low":
                low = parsed[1]
            else:
                high = parsed[1]
    return {"ref_low": low, "ref_high": high, "ref_text": text or None}


def _value(cells: _Cells, profile: Profile, status: str | None) -> Value:
    raw = cells.get("result")
    unit = cells.get("unit") or None
    flag = None
    raw_flag = cells.get("flag")
    if raw_flag:
        flag = _lookup(cells, "flag", profile.flags, raw_flag)
    ref = _reference(cells, profile)
    kind = None
    raw_kind = cells.get("value_type")
    if raw_kind:
        kind = _lookup(cells, "value_type", profile.value_types, raw_kind)
    if not raw:
        if status == "cancelled" or kind == "none":
            return Value("none", unit=unit, interpretation=flag, **ref)
        cells.error("result", "the result is empty")
        return Value("none")
    parsed = _number(raw)
    if kind == "quantity" or (kind is None and (parsed is not None or unit)):
        if parsed is None:
            why = "the value type says numeric" if kind == "quantity" else f"a unit ({unit}) is given"
            cells.error("result", f"{_quote(raw)} is not a number, but {why}")
            return Value("none")
        return Value("quantity", parsed[1], parsed[0], None, unit, interpretation=flag, **ref)
    return Value(kind or "text", text=raw, unit=unit, interpretation=flag, **ref)


def is_aligned(table: Table, cells: Sequence[str]) -> bool:
    """Whether the row has the header's column count (extra cells that are all empty: a trailing delimiter)."""
    width = len(table.header)
    return len(cells) == width or (len(cells) > width and not any(c.strip() for c in cells[width:]))


def report_key(table: Table, cells: Sequence[str]) -> tuple[str | None, bool]:
    """(the row's report number or None, whether the row is aligned): the grouping key of
    :mod:`adapters.csv.reports`, as :func:`parse_row` will find it."""
    i = table.columns["report_id"]
    key = cells[i].strip() if i < len(cells) else ""
    return (key if key and "\x00" not in key else None), is_aligned(table, cells)


def parse_row(table: Table, line: int, cells_list: list[str], profile: Profile) -> Row | BadRow:
    """One data row → a Row, or a BadRow listing every problem found in it (never the resident ID itself)."""
    cells = _Cells(table, cells_list, line, profile)
    report_guess, aligned = report_key(table, cells_list)
    if "\x00" in "".join(cells_list):
        where = [cells.header_at(i) for i, c in enumerate(cells_list) if "\x00" in c]
        return BadRow(line, report_guess, f"NUL character(s) in column(s) {', '.join(where)}: the row is not text",
                      aligned=aligned)
    if not aligned:
        return BadRow(line, report_guess, f"wrong column count: expected {len(table.header)}, got {len(cells_list)}",
                      aligned=False)
    report_id = cells.get("report_id")
    if not report_id:
        cells.error("report_id", "the report number is empty")
    elif len(report_id) > 128:
        cells.error("report_id", "the report number is longer than 128 characters")
    resident_id = ""
    raw_id = cells.get("resident_id")
    if not raw_id:
        cells.error("resident_id", "the resident ID is empty")
    else:
        try:
            resident_id = normalize_resident_id(raw_id)
        except InvalidResidentId as exc:  # the message never repeats the number
            cells.error("resident_id", str(exc))
    status = None
    if "status" in table.columns:
        raw_status = cells.get("status")
        if raw_status:
            status = _lookup(cells, "status", profile.statuses, raw_status)
        else:
            cells.error("status", "the report status is empty")
    else:
        status = profile.default_status
    version = STATUS_RANK.get(status or "", 0)
    raw_version = cells.get("version")
    if raw_version:
        if raw_version.isdecimal() and int(raw_version) > 0:
            version = int(raw_version)
        else:
            cells.error("version", f"{_quote(raw_version)} is not a positive whole number")
    zone = profile.zone
    reported_at = collected_at = None
    raw_reported = cells.get("reported_at")
    if not raw_reported:
        cells.error("reported_at", "the report time is missing")
    else:
        reported_at = _report_moment(raw_reported, profile.datetime_formats, zone)
        if reported_at is None:
            cells.error("reported_at", f"{_quote(raw_reported)} is not a date-time in the profile's formats")
    raw_collected = cells.get("collected_at")
    if raw_collected:
        collected_at = _report_moment(raw_collected, profile.datetime_formats, zone)
        if collected_at is None:
            cells.error("collected_at", f"{_quote(raw_collected)} is not a date-time in the profile's formats")
    sex = None
    raw_sex = cells.get("sex")
    if raw_sex:
        sex = _lookup(cells, "sex", profile.sex, raw_sex)
    birth_year = None
    raw_birth = cells.get("birth_date")
    if raw_birth:
        born = _moment(raw_birth, profile.date_formats, zone)
        if born is None:
            cells.error("birth_date", f"{_quote(raw_birth)} is not a date in the profile's formats")
        else:
            birth_year = born.year
    raw_year = cells.get("birth_year")
    if raw_year and birth_year is None:
        if raw_year.isdecimal() and 1880 <= int(raw_year) <= 2200:
            birth_year = int(raw_year)
        else:
            cells.error("birth_year", f"{_quote(raw_year)} is not a year")
    item_code = cells.get("item_code")
    if not item_code:
        cells.error("item_code", "the item code is empty")
    elif len(item_code) > 64:
        cells.error("item_code", "the item code is longer than 64 characters")
    value = _value(cells, profile, status)
    if cells.errors:
        return BadRow(line, report_id or None, "; ".join(cells.errors))
    codes = [Code(item_code, None, cells.get("item_name") or None)]
    if cells.get("loinc_code"):
        codes.append(Code(cells.get("loinc_code"), LOINC, cells.get("item_name") or None))
    panel_code = cells.get("panel_code")
    assert status is not None and reported_at is not None
    return Row(line=line, report_id=report_id, resident_id=resident_id, status=status, version=version,
               reported_at=reported_at, collected_at=collected_at, sex=sex, birth_year=birth_year,
               panel=Code(panel_code, None, cells.get("panel_name") or None) if panel_code else None,
               specimen_type=cells.get("specimen_type") or None, specimen_id=cells.get("specimen_id") or None,
               observation=LabObservation(codes, value, f"line {line}"))

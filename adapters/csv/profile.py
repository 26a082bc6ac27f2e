"""Column profiles: how one kind of LIS export is laid out (format: ``adapters/profiles/README.md``).

A profile (YAML data in ``adapters/profiles/``) names the headers of each field, the date formats, how a
reference-range text is split, and the status, sex, flag and value-type vocabularies. Headers and vocabulary
entries are matched ignoring case, blanks and full-/half-width forms. Any column the profile does not map is
never read: names, phone numbers, bed numbers (docs/rules.md, "Privacy": collect only what the business
needs). Times without an offset are in the profile's time zone, Beijing time by default (docs/rules.md,
"Dates").
"""
from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from codes.calendar import BEIJING
from schemas.statuses import STATUSES

PROFILES_DIR = Path(__file__).parent.parent / "profiles"
#: The fields a profile may map to columns.
FIELDS = ("resident_id", "sex", "birth_date", "birth_year", "report_id", "version", "panel_code", "panel_name",
          "item_code", "item_name", "loinc_code", "value_type", "result", "unit", "reference_range", "ref_low",
          "ref_high", "flag", "status", "specimen_type", "specimen_id", "collected_at", "reported_at")
#: The fields without which no row can become an observation of a report.
REQUIRED = ("resident_id", "report_id", "item_code", "result", "reported_at")
VALUE_KINDS = ("quantity", "text", "coded", "none")
#: Accepted spellings of a delimiter (profile key or ``--delimiter``) → the character; "auto" detects it.
DELIMITERS = {"auto": "auto", ",": ",", "comma": ",", "\t": "\t", "\\t": "\t", "tab": "\t", ";": ";",
              "semicolon": ";", "|": "|", "bar": "|", "pipe": "|"}
_KEYS = {"name", "description", "encoding", "delimiter", "timezone", "columns", "ignore", "datetime_formats",
         "date_formats", "reference_range", "statuses", "default_status", "sex", "flags", "value_types",
         "header_search_lines"}


class ProfileError(ValueError):
    """A profile that does not exist or does not satisfy the profile format."""


@lru_cache(maxsize=1024)  # headers and vocabulary entries: a handful of distinct texts, met on every row
def lookup_key(text: str) -> str:
    """Lookup form of a header or vocabulary entry: NFKC (full-width → half-width), no blanks, case-folded."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).casefold()


def encoding_name(encoding: str, source: str = "--encoding") -> str:
    """The codec's canonical name (``GBK`` → ``gbk``); ProfileError naming ``source`` if Python has none."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ProfileError(f"{source}: unknown encoding {encoding!r}") from None


@dataclass(frozen=True)
class Profile:
    """How one kind of LIS export is laid out; loaded from ``adapters/profiles/NAME.yaml``."""

    name: str
    columns: dict[str, tuple[str, ...]]
    description: str = ""
    encoding: str = "auto"
    delimiter: str = "auto"
    timezone: str = "Asia/Shanghai"
    datetime_formats: tuple[str, ...] = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")
    date_formats: tuple[str, ...] = ("%Y-%m-%d",)
    range_separators: tuple[str, ...] = ("-", "~")
    statuses: dict[str, str] = field(default_factory=dict)
    default_status: str | None = None
    sex: dict[str, str] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    value_types: dict[str, str] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    header_search_lines: int = 10

    @property
    def zone(self) -> tzinfo:
        """The zone of offset-less times: Beijing time as a fixed +08:00 (China has no DST since 1991),
        any other IANA zone from the tz database."""
        if self.timezone == "Asia/Shanghai":
            return BEIJING
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ProfileError(f"profile {self.name}: unknown time zone {self.timezone!r}") from None

    def header(self, name: str) -> str:
        """The first header the profile names for field ``name`` (the field name if it maps none)."""
        return self.columns[name][0] if name in self.columns else name

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Profile:
        """A profile from parsed YAML; ProfileError (naming ``source``) for anything the format forbids."""
        if not isinstance(data, dict):
            raise ProfileError(f"{source}: a profile is a YAML mapping")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ProfileError(f"{source}: unknown key(s) {', '.join(unknown)}")
        columns_raw = data.get("columns")
        if not isinstance(columns_raw, dict) or not columns_raw:
            raise ProfileError(f"{source}: 'columns' must map fields to header names")
        columns: dict[str, tuple[str, ...]] = {}
        for name, headers in columns_raw.items():
            if name not in FIELDS:
                raise ProfileError(f"{source}: unknown field {name!r} in columns (fields: {', '.join(FIELDS)})")
            headers = [headers] if isinstance(headers, str) else headers
            if not headers or not all(isinstance(h, str) and h.strip() for h in headers):
                raise ProfileError(f"{source}: columns.{name} must be a header name or a list of them")
            columns[name] = tuple(h.strip() for h in headers)
        default_status = data.get("default_status")
        missing = [f for f in REQUIRED if f not in columns]
        if "status" not in columns and not default_status:
            missing.append("status (or default_status)")
        if missing:
            raise ProfileError(f"{source}: no column for required field(s) {', '.join(missing)}")
        ignored = {lookup_key(h) for h in data.get("ignore") or ()}
        clash = [h for hs in columns.values() for h in hs if lookup_key(h) in ignored]
        if clash:
            raise ProfileError(f"{source}: column(s) {', '.join(clash)} are both mapped and ignored")

        def vocabulary(name: str, allowed: Sequence[str] | None) -> dict[str, str]:
            raw = data.get(name) or {}
            if not isinstance(raw, dict):
                raise ProfileError(f"{source}: {name} must be a mapping")
            out = {}
            for k, v in raw.items():
                if allowed is not None and str(v) not in allowed:
                    raise ProfileError(f"{source}: {name}.{k} = {v!r} is not one of {', '.join(allowed)}")
                out[lookup_key(str(k))] = str(v)
            return out

        statuses = vocabulary("statuses", STATUSES)
        if "status" in columns and not statuses:
            raise ProfileError(f"{source}: 'statuses' must list the status values of the status column")
        if default_status is not None and default_status not in STATUSES:
            raise ProfileError(f"{source}: default_status {default_status!r} is not one of {', '.join(STATUSES)}")
        flags = vocabulary("flags", None)
        if any(len(v) > 16 for v in flags.values()):
            raise ProfileError(f"{source}: flag codes have at most 16 characters")
        ranges = data.get("reference_range") or {}
        separators = tuple(str(s) for s in ranges.get("separators", ("-", "~")))
        delimiter = DELIMITERS.get(str(data.get("delimiter", "auto")))
        if delimiter is None:
            raise ProfileError(f"{source}: delimiter must be one of {', '.join(sorted(set(DELIMITERS) - {chr(9)}))}")
        profile = cls(
            name=str(data.get("name") or Path(source).stem), columns=columns,
            description=str(data.get("description") or ""), encoding=str(data.get("encoding", "auto")),
            delimiter=delimiter, timezone=str(data.get("timezone", "Asia/Shanghai")),
            datetime_formats=tuple(data.get("datetime_formats") or cls.datetime_formats),
            date_formats=tuple(data.get("date_formats") or cls.date_formats), range_separators=separators,
            statuses=statuses, default_status=default_status,
            sex=vocabulary("sex", ("male", "female", "other", "unknown")), flags=flags,
            value_types=vocabulary("value_types", VALUE_KINDS),
            ignore=tuple(str(h) for h in data.get("ignore") or ()),
            header_search_lines=int(data.get("header_search_lines", 10)))
        if profile.encoding != "auto":
            encoding_name(profile.encoding, source)
        profile.zone  # noqa: B018 - fail at load time, not on the first row
        return profile


def available_profiles() -> list[str]:
    """The names of the shipped profiles."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str) -> Profile:
    """A shipped profile by name (``lis-generic-zh``) or a profile file by path."""
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ProfileError(f"profile {name!r}: not a profile name")
        path = PROFILES_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ProfileError(f"unknown profile {name!r}; available: {', '.join(available_profiles())}")
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    return Profile.from_dict(data, str(path))

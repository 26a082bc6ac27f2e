"""CSV/TSV result exports of a laboratory information system (LIS): one observation per row.

``hrx adapter csv FILE --institution ID --profile NAME`` reads a file written by a hospital's LIS, turns it
into lab reports and publishes them through the shared :class:`~adapters.pipeline.ResultPipeline`.

Rules implemented (profile format: ``adapters/profiles/README.md``):
- A *column profile* (YAML data in ``adapters/profiles/``) names the headers of each field, the date formats,
  how a reference-range text is split, and the status, sex, flag and value-type vocabularies. Headers are
  matched ignoring case, blanks and full-/half-width forms; any column the profile does not map is never read
  (names, phone numbers, bed numbers: PIPL, collect only what the business needs).
- Encoding ``auto``: a BOM, else strict UTF-8, else GB18030 (a superset of GBK and GB2312). Delimiter
  ``auto``: the header row is looked for in the first lines of the file under comma, tab, semicolon and bar;
  the delimiter under which the header yields the most profile columns wins (more reliable than
  ``csv.Sniffer`` on short Chinese headers).
- Rows sharing a report number (报告单号) form one report, wherever they are in the file (grouped by key,
  not only consecutive rows); the report number is the ``result_id``. Version: the version column when the
  profile maps one, otherwise the status rank (preliminary 1, final 2, corrected/amended 3, cancelled 4), so
  a file holding both the preliminary and the final rows of one report number yields two versions.
  ``reported_at`` is the latest report time among the rows, ``collected_at`` the earliest. Times without an
  offset are in the profile's time zone (Asia/Shanghai, +08:00).
- All-or-nothing per report number: one bad row (bad resident ID, a result that is not a number although a
  unit or a numeric value type says it must be, missing report time, unknown status or flag, wrong column
  count, a second patient under the same report number, ...) rejects every row of that report number. Each
  rejected row is reported as ``line N: reason`` and sent to ``hr.deadletter.v1`` with ``origin.file`` and
  ``origin.line``. The dead-letter payload holds the header and the row restricted to the profile's columns,
  with the resident ID replaced by a placeholder; a row with the wrong column count carries no payload (its
  cells cannot be attributed to columns, so a name could sit in any of them).
- Publishing: reports in batches of :data:`BATCH_REPORTS`, each batch acknowledged by Kafka before the next.
  When the broker is unavailable the run stops, reports exactly what was acknowledged, and exits with 2; a
  re-run of the same file is safe because the store's natural key (institution, report number, version)
  is UNIQUE, so a report already stored is absorbed as a duplicate and stored exactly once.
- Exit codes: 0 every row published, 1 rows rejected (or the whole file refused), 2 broker unavailable.
"""
from __future__ import annotations

import csv as csvlib
import io
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import yaml

from schemas.resident_id import InvalidResidentId, normalize_resident_id, scrub
from codes.calendar import BEIJING
from schemas.statuses import STATUS_RANK

if TYPE_CHECKING:
    from adapters.pipeline import Code, LabObservation, LabReport, ResultPipeline, Value

# adapters.pipeline (and through it jsonschema, ~1 s) is imported where it is used, not here: exchange.cli
# registers this command at import time and `hrx engine` must not pay for it.

PROFILES_DIR = Path(__file__).parent / "profiles"
BATCH_REPORTS = 200
PROGRESS_ROWS = 5000
DEAD_LETTER_BATCH = 500
LOINC = "http://loinc.org"
VALUE_KINDS = ("quantity", "text", "coded", "none")
FIELDS = ("resident_id", "sex", "birth_date", "birth_year", "report_id", "version", "panel_code", "panel_name",
          "item_code", "item_name", "loinc_code", "value_type", "result", "unit", "reference_range", "ref_low",
          "ref_high", "flag", "status", "specimen_type", "specimen_id", "collected_at", "reported_at")
REQUIRED = ("resident_id", "report_id", "item_code", "result", "reported_at")
DELIMITERS = {"auto": "auto", ",": ",", "comma": ",", "\t": "\t", "\\t": "\t", "tab": "\t", ";": ";",
              "semicolon": ";", "|": "|", "bar": "|", "pipe": "|"}
AUTO_DELIMITERS = (",", "\t", ";", "|")
DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "bar"}
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(rf"^(<=|>=|<|>|≤|≥)?\s*({_NUMBER})$")
_COMPARATOR = {"≤": "<=", "≥": ">="}


class ProfileError(ValueError):
    """A profile that does not exist or does not satisfy the profile format."""


class CsvFileError(ValueError):
    """The file as a whole cannot be read (encoding, header); ``line`` is where the problem is."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


# --------------------------------------------------------------------------------------------- profiles

def _key(text: str) -> str:
    """Lookup form of a header or vocabulary entry: NFKC (full-width → half-width), no blanks, case-folded."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).casefold()


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
        try:
            return ZoneInfo(self.timezone)
        except ZoneInfoNotFoundError:
            if self.timezone == "Asia/Shanghai":  # no tz database installed: China has no DST since 1991
                return BEIJING
            raise ProfileError(f"profile {self.name}: unknown time zone {self.timezone!r}") from None

    def header(self, name: str) -> str:
        return self.columns[name][0] if name in self.columns else name

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Profile:
        from adapters.pipeline import STATUSES

        if not isinstance(data, dict):
            raise ProfileError(f"{source}: a profile is a YAML mapping")
        known = {"name", "description", "encoding", "delimiter", "timezone", "columns", "ignore",
                 "datetime_formats", "date_formats", "reference_range", "statuses", "default_status", "sex",
                 "flags", "value_types", "header_search_lines"}
        unknown = sorted(set(data) - known)
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
        ignored = {_key(h) for h in data.get("ignore") or ()}
        clash = [h for hs in columns.values() for h in hs if _key(h) in ignored]
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
                out[_key(str(k))] = str(v)
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
            _codec(profile.encoding, source)
        profile.zone  # noqa: B018 - fail at load time, not on the first row
        return profile


def available_profiles() -> list[str]:
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


def _codec(encoding: str, source: str = "--encoding") -> str:
    import codecs

    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ProfileError(f"{source}: unknown encoding {encoding!r}") from None


# --------------------------------------------------------------------------------------------- reading

@dataclass
class Table:
    """A decoded file: the header, the data rows with their first physical line, and the column of each field."""

    header: list[str]
    header_line: int
    rows: list[tuple[int, list[str]]]
    columns: dict[str, int]
    encoding: str
    delimiter: str


def decode(data: bytes, encoding: str = "auto") -> tuple[str, str]:
    """The text and the encoding used; 'auto' tries a BOM, then strict UTF-8, then GB18030."""
    def failed(exc: UnicodeDecodeError, name: str) -> CsvFileError:
        line = data[:exc.start].count(b"\n") + 1
        hint = " (try --encoding gb18030)" if name in ("gbk", "gb2312", "cp936") else ""
        return CsvFileError(f"the file is not valid {name} text at byte {exc.start}{hint}", line)

    if encoding == "auto":
        for bom, name in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
            if data.startswith(bom):
                try:
                    return data.decode(name), name
                except UnicodeDecodeError as exc:
                    raise failed(exc, name) from None
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
        try:
            return data.decode("gb18030"), "gb18030"
        except UnicodeDecodeError as exc:
            raise failed(exc, "UTF-8 or GB18030") from None
    name = _codec(encoding)
    try:
        text = data.decode(name)
    except UnicodeDecodeError as exc:
        raise failed(exc, name) from None
    return text.removeprefix("\ufeff"), name


def _records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the physical line each one starts on (quoted cells may span lines)."""
    reader = csvlib.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=False)
    previous = 0
    try:
        for cells in reader:
            yield previous + 1, cells
            previous = reader.line_num
    except csvlib.Error as exc:
        raise CsvFileError(f"malformed CSV: {exc}", previous + 1) from None


def _match_header(cells: Sequence[str], profile: Profile) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, cell in enumerate(cells):
        index.setdefault(_key(cell.replace("\ufeff", "")), i)
    found = {}
    for name, headers in profile.columns.items():
        for header in headers:
            if _key(header) in index:
                found[name] = index[_key(header)]
                break
    return found


def read_table(data: bytes, profile: Profile, encoding: str | None = None, delimiter: str | None = None) -> Table:
    """Decode, find the header row (and the delimiter) and split the rest into rows; raise CsvFileError."""
    text, used = decode(data, encoding or profile.encoding)
    wanted = DELIMITERS.get(delimiter or profile.delimiter)
    if wanted is None:
        raise CsvFileError(f"unknown delimiter {delimiter!r}: use comma, tab, semicolon, bar or auto")
    candidates = AUTO_DELIMITERS if wanted == "auto" else (wanted,)
    best: tuple[int, int, dict[str, int]] = (0, 1, {})  # (columns matched, line, columns): for the error
    chosen: tuple[int, str, dict[str, int]] | None = None
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if number > profile.header_search_lines:
            break
        tries = [(d, _match_header(next(csvlib.reader([line.rstrip("\r\n")], delimiter=d), []), profile))
                 for d in candidates]
        d, found = max(tries, key=lambda t: len(t[1]))  # ties: the earlier candidate (comma before tab)
        if len(found) > best[0]:
            best = (len(found), number, found)
        if all(f in found for f in REQUIRED):
            chosen = (number, d, found)
            break
    if chosen is None:
        missing = [f"{f} ({'/'.join(profile.columns[f])})" for f in REQUIRED if f not in best[2]]
        raise CsvFileError(f"no header row of profile {profile.name} in the first {profile.header_search_lines} "
                           f"line(s): missing column(s) {', '.join(missing)}", best[1])
    header_line, sep, columns = chosen
    if "status" not in columns and profile.default_status is None:
        raise CsvFileError(f"no status column ({'/'.join(profile.columns.get('status', ()))}) and the profile "
                           "has no default_status", header_line)
    header: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    for number, cells in _records(text, sep):
        if number < header_line:
            continue
        if number == header_line:
            header = cells
            continue
        if not any(c.strip() for c in cells):
            continue  # blank line
        rows.append((number, cells))
    return Table(header, header_line, rows, columns, used, sep)


# --------------------------------------------------------------------------------------------- rows

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
    line: int
    report_id: str | None
    reason: str
    aligned: bool = True  # False: wrong column count, so no cell can be trusted (or copied anywhere)


class _Cells:
    def __init__(self, table: Table, cells: list[str], line: int, profile: Profile) -> None:
        self.table, self.cells, self.line, self.profile = table, cells, line, profile
        self.errors: list[str] = []

    def get(self, name: str) -> str:
        i = self.table.columns.get(name)
        return self.cells[i].strip() if i is not None and i < len(self.cells) else ""

    def header(self, name: str) -> str:
        i = self.table.columns.get(name)
        return self.table.header[i].strip() if i is not None else self.profile.header(name)

    def error(self, name: str, message: str) -> None:
        self.errors.append(f"{self.header(name)}: {message}")


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _number(text: str) -> tuple[str | None, float] | None:
    match = _QUANTITY.match(unicodedata.normalize("NFKC", text).strip())
    if not match:
        return None
    comparator = match.group(1)
    return _COMPARATOR.get(comparator, comparator) if comparator else None, float(match.group(2))


def _moment(text: str, formats: Sequence[str], zone: tzinfo) -> datetime | None:
    text = unicodedata.normalize("NFKC", text).strip()
    for fmt in formats:
        try:
            moment = datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment


def _lookup(cells: _Cells, name: str, vocabulary: dict[str, str], raw: str) -> str | None:
    value = vocabulary.get(_key(raw))
    if value is None:
        known = ", ".join(sorted(vocabulary)[:12])
        cells.error(name, f"{_quote(raw)} is not a known value (the profile knows: {known})")
    return value


def _reference(cells: _Cells, profile: Profile) -> dict[str, Any]:
    text = cells.get("reference_range")
    low = high = None
    if text:
        norm = unicodedata.normalize("NFKC", text).strip()
        separators = "|".join(re.escape(unicodedata.normalize("NFKC", s))
                              for s in sorted(profile.range_separators, key=len, reverse=True))
        pair = re.fullmatch(rf"({_NUMBER})\s*(?:{separators})\s*({_NUMBER})", norm) if separators else None
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
    from adapters.pipeline import Value

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


def parse_row(table: Table, line: int, cells_list: list[str], profile: Profile) -> Row | BadRow:
    """One data row → a Row, or a BadRow listing every problem found in it (never the resident ID itself)."""
    from adapters.pipeline import Code, LabObservation

    cells = _Cells(table, cells_list, line, profile)
    width = len(table.header)
    if len(cells_list) != width and not (len(cells_list) > width and not any(c.strip() for c in cells_list[width:])):
        i = table.columns["report_id"]
        guess = cells_list[i].strip() if i < len(cells_list) else ""
        return BadRow(line, guess or None, f"wrong column count: expected {width}, got {len(cells_list)}",
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
        if raw_version.isdigit() and int(raw_version) > 0:
            version = int(raw_version)
        else:
            cells.error("version", f"{_quote(raw_version)} is not a positive whole number")
    zone = profile.zone
    reported_at = collected_at = None
    raw_reported = cells.get("reported_at")
    if not raw_reported:
        cells.error("reported_at", "the report time is missing")
    else:
        reported_at = _moment(raw_reported, profile.datetime_formats, zone)
        if reported_at is None:
            cells.error("reported_at", f"{_quote(raw_reported)} is not a date-time in the profile's formats")
    raw_collected = cells.get("collected_at")
    if raw_collected:
        collected_at = _moment(raw_collected, profile.datetime_formats, zone)
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
        if raw_year.isdigit() and 1880 <= int(raw_year) <= 2200:
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


# --------------------------------------------------------------------------------------------- reports

@dataclass
class ReportGroup:
    """All rows of one report number, by version, and the reasons it is rejected (if any)."""

    report_id: str
    first_line: int
    versions: dict[int, list[Row]] = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    reason: str | None = None  # a report-level reason (pipeline refusal)

    @property
    def rejected(self) -> bool:
        return bool(self.bad) or self.reason is not None


def group_rows(parsed: Sequence[Row | BadRow]) -> tuple[list[ReportGroup], list[BadRow]]:
    """Report groups in order of first appearance, and bad rows that belong to no report number."""
    groups: dict[str, ReportGroup] = {}
    orphans: list[BadRow] = []
    # A misaligned row joins a report only when its would-be report number is one that aligned rows carry:
    # its cell could hold anything (a name), which must not become a report number in a message.
    known = {i.report_id for i in parsed if i.report_id and not (isinstance(i, BadRow) and not i.aligned)}
    for item in parsed:
        if isinstance(item, BadRow) and not item.aligned and item.report_id not in known:
            item.report_id = None
        if item.report_id is None:
            assert isinstance(item, BadRow)
            orphans.append(item)
            continue
        group = groups.setdefault(item.report_id, ReportGroup(item.report_id, item.line))
        group.lines.append(item.line)
        if isinstance(item, BadRow):
            group.bad.append(item)
            continue
        first = next((rows[0] for rows in group.versions.values()), None)
        if first is not None:
            conflict = _conflict(first, item, group.versions.get(item.version))
            if conflict:
                group.bad.append(BadRow(item.line, item.report_id, conflict))
                continue
        group.versions.setdefault(item.version, []).append(item)
    return list(groups.values()), orphans


def _conflict(first: Row, row: Row, same_version: list[Row] | None) -> str | None:
    if row.resident_id != first.resident_id:
        return f"report number {row.report_id} already belongs to another patient (line {first.line})"
    for name, label in (("sex", "sex"), ("birth_year", "birth date")):
        a, b = getattr(first, name), getattr(row, name)
        if a is not None and b is not None and a != b:
            return f"{label} differs from line {first.line} of the same report"
    if same_version and same_version[0].status != row.status:
        return (f"status {row.status} differs from {same_version[0].status} on line {same_version[0].line} "
                f"for version {row.version} of the same report")
    return None


def build_reports(group: ReportGroup, institution: str, file_name: str) -> list[LabReport]:
    from adapters.pipeline import Code, LabReport, Patient

    reports = []
    for version, rows in sorted(group.versions.items()):
        head = rows[0]
        panel = next((r.panel for r in rows if r.panel), None)
        if panel is not None:
            codes: Sequence[Code] = [panel]
        elif len(rows) == 1:
            codes = rows[0].observation.codes
        else:
            # No panel column: the report's own item stays unmapped; recognition works per observation.
            codes = [Code("CSV-REPORT", None, "组合未导出 / no panel in the export")]
        collected = [r.collected_at for r in rows if r.collected_at]
        reports.append(LabReport(
            institution=institution, result_id=group.report_id, version=version, status=head.status,
            patient=Patient(head.resident_id, next((r.sex for r in rows if r.sex), None),
                            next((r.birth_year for r in rows if r.birth_year), None), f"line {head.line}"),
            codes=codes, observations=[r.observation for r in rows],
            reported_at=max(r.reported_at for r in rows), collected_at=min(collected) if collected else None,
            specimen_type=next((r.specimen_type for r in rows if r.specimen_type), None),
            specimen_id=next((r.specimen_id for r in rows if r.specimen_id), None),
            message_id=f"{file_name}#L{head.line}"[:256], location=f"line {head.line}"))
    return reports


# --------------------------------------------------------------------------------------------- the run

@dataclass
class Problem:
    line: int | None
    message: str  # scrubbed

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class ImportSummary:
    """What a run did; ``exit_code`` is 0 (all published), 1 (rejections or refused file), 2 (broker down)."""

    file: str
    encoding: str | None = None
    delimiter: str | None = None
    rows: int = 0
    reports: int = 0
    published_reports: int = 0
    published_rows: int = 0
    rejected_rows: int = 0
    rejected_reports: int = 0
    dead_letters: int = 0
    problems: list[Problem] = field(default_factory=list)
    refused: str | None = None
    broker_error: str | None = None
    first_unpublished_line: int | None = None
    dead_letters_pending: int = 0
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        if self.broker_error:
            return 2
        return 1 if self.refused or self.rejected_rows else 0

    def lines(self) -> list[str]:
        """The human summary (stdout)."""
        name = self.file
        if self.refused:
            out = [f"{name}: refused: {self.refused}"]
            if self.broker_error:
                out.append(f"{name}: the dead letter for this refusal was not published (broker unavailable: "
                           f"{self.broker_error})")
            return out
        out = [f"{name}: read {self.rows} row(s) in {self.reports} report(s) "
               f"({self.encoding}, {DELIMITER_NAMES.get(self.delimiter or '', self.delimiter)}-separated)"]
        if self.dry_run:
            out.append(f"{name}: checked only (--dry-run): {self.reports - self.rejected_reports} report(s) "
                       f"would be published; nothing was published")
        else:
            out.append(f"{name}: published {self.published_reports} report(s) ({self.published_rows} row(s)), "
                       "each acknowledged by the broker")
        out.append(f"{name}: rejected {self.rejected_rows} row(s) in {self.rejected_reports} report(s); "
                   f"{self.dead_letters} dead letter(s) sent to hr.deadletter.v1")
        if self.broker_error:
            where = (f"nothing from the report starting on line {self.first_unpublished_line} onwards was "
                     "published" if self.first_unpublished_line
                     else f"every report was published but {self.dead_letters_pending} dead letter(s) were not")
            out.append(f"{name}: STOPPED, broker unavailable: {self.broker_error}; {where}. Re-run the same "
                       "file once the broker is back: reports already stored are recognised by (institution, "
                       "report number, version) and stored exactly once.")
        return out


#: (total rows, label) → a context manager whose value is ``update(rows_done)``; see :class:`RowProgress`.
Progress = Callable[[int, str], Any]


def import_file(path: Path | str, institution: str, profile: Profile, pipeline: ResultPipeline, *,
                encoding: str | None = None, delimiter: str | None = None, batch_reports: int = BATCH_REPORTS,
                dry_run: bool = False, progress: Progress | None = None) -> ImportSummary:
    """Read, validate, publish and dead-letter one export file; never raises for bad data or a broker outage.

    Two passes: every row is checked and every report built (so that all rejections are known even when the
    broker is down), then the reports are published in batches of ``batch_reports``, in the order of their
    first line, each batch acknowledged before the next; dead letters go last.
    """
    from adapters.pipeline import AdapterError
    from adapters.publish import BrokerUnavailable

    path = Path(path)
    summary = ImportSummary(file=str(path), dry_run=dry_run or pipeline.publisher is None)
    try:
        pipeline.check_institution(institution)
    except AdapterError as exc:
        summary.refused = exc.message
        return summary
    letters: list[dict[str, Any]] = []

    def dead(error: str, line: int | None, payload: str | None) -> None:
        from schemas.dead_letter import dead_letter_event

        letters.append(dead_letter_event(error, payload, file=str(path), line=line, adapter="csv",
                                         institution=institution))

    try:
        table = read_table(path.read_bytes(), profile, encoding, delimiter)
    except CsvFileError as exc:
        summary.refused = scrub(str(exc))
        dead(str(exc), exc.line, None)
        _send_letters(summary, letters, pipeline, BrokerUnavailable)
        return summary
    summary.encoding, summary.delimiter, summary.rows = table.encoding, table.delimiter, len(table.rows)
    by_line = dict(table.rows)
    mapped = sorted(set(table.columns.values()))
    resident_column = table.columns["resident_id"]

    def payload(line: int) -> str:
        """Header and row restricted to the profile's columns, the resident ID replaced (PIPL: minimum)."""
        cells = by_line[line]
        buffer = io.StringIO()
        writer = csvlib.writer(buffer, delimiter=table.delimiter, lineterminator="\n")
        writer.writerow([table.header[i] for i in mapped])
        writer.writerow(["[resident-id]" if i == resident_column else cells[i] if i < len(cells) else ""
                         for i in mapped])
        return buffer.getvalue()

    def reject_row(bad: BadRow) -> None:
        summary.rejected_rows += 1
        summary.problems.append(Problem(bad.line, scrub(bad.reason)))
        dead(f"line {bad.line}: {bad.reason}", bad.line, payload(bad.line) if bad.aligned else None)

    def reject_group(group: ReportGroup) -> None:
        summary.rejected_reports += max(1, len(group.versions))
        bad_lines = {b.line for b in group.bad}
        for bad in group.bad:
            reject_row(bad)
        why = group.reason or f"bad line(s) {', '.join(str(n) for n in sorted(bad_lines))}"
        lines = sorted(group.lines)
        listed = ", ".join(str(n) for n in lines[:50]) + (", …" if len(lines) > 50 else "")
        summary.problems.append(Problem(group.first_line, scrub(
            f"report {group.report_id} rejected entirely (line(s) {listed}): {why}")))
        for line in lines:
            if line not in bad_lines:
                summary.rejected_rows += 1
                dead(f"line {line}: held back with report {group.report_id}, rejected as a whole: {why}", line,
                     payload(line))

    groups, orphans = group_rows([parse_row(table, line, cells, profile) for line, cells in table.rows])
    summary.reports = sum(max(1, len(g.versions)) for g in groups)
    ready: list[tuple[ReportGroup, list[dict[str, Any]]]] = []
    with _progress(progress, summary.rows, "checking rows") as update:
        for bad in orphans:
            reject_row(bad)
        update(len(orphans))
        for group in groups:
            if not group.rejected:
                try:
                    ready.append((group, [pipeline.lab_event(r, "csv")
                                          for r in build_reports(group, institution, path.name)]))
                except AdapterError as exc:
                    group.reason = str(exc)
            if group.rejected:
                reject_group(group)
            update(len(group.lines))
    summary.problems.sort(key=lambda p: p.line or 0)
    if summary.dry_run:
        return summary
    with _progress(progress, sum(len(g.lines) for g, _ in ready), "publishing") as update:
        for start in range(0, len(ready), batch_reports):
            chunk = ready[start:start + batch_reports]
            try:
                pipeline.publish([event for _, built in chunk for event in built])
            except BrokerUnavailable as exc:
                summary.broker_error = scrub(str(exc))
                summary.first_unpublished_line = chunk[0][0].first_line
                summary.dead_letters_pending = len(letters)
                return summary
            summary.published_reports += sum(len(built) for _, built in chunk)
            rows = sum(len(g.lines) for g, _ in chunk)
            summary.published_rows += rows
            update(rows)
    _send_letters(summary, letters, pipeline, BrokerUnavailable)
    return summary


@contextmanager
def _progress(factory: Progress | None, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if factory is None:
        yield lambda rows: None
        return
    with factory(total, label) as update:
        yield update


def _send_letters(summary: ImportSummary, letters: list[dict[str, Any]], pipeline: ResultPipeline,
                  unavailable: type[Exception]) -> None:
    from schemas import events
    from schemas.topics import TOPIC_DEADLETTER
    from adapters.publish import Record

    if summary.dry_run or not letters or pipeline.publisher is None:
        return
    for start in range(0, len(letters), DEAD_LETTER_BATCH):
        chunk = letters[start:start + DEAD_LETTER_BATCH]
        try:
            pipeline.publisher.publish(Record(TOPIC_DEADLETTER, f"csv:{letter['origin']['institution']}",
                                              events.encode(letter)) for letter in chunk)
        except unavailable as exc:
            summary.broker_error = scrub(str(exc))
            summary.dead_letters_pending = len(letters) - summary.dead_letters
            return
        summary.dead_letters += len(chunk)


# --------------------------------------------------------------------------------------------- progress

class RowProgress:
    """A click progress bar on a terminal; for a large file on a pipe, a plain line every 10 %; else nothing."""

    def __init__(self, total: int, label: str = "rows", stream: TextIO | None = None,
                 threshold: int = PROGRESS_ROWS, tty: bool | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.enabled = total > 0 and (self.tty or total > threshold)
        self.label = label
        self.done = 0
        self._next = 0.1
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.enabled and self.tty:
            self._bar = click.progressbar(length=self.total, label=self.label, file=self.stream, show_pos=True)
            self._bar.__enter__()
        return self.update

    def update(self, rows: int) -> None:
        if not self.enabled or rows <= 0:
            return
        self.done += rows
        if self._bar is not None:
            self._bar.update(rows)
            return
        while self.done >= self.total * self._next - 1e-9 and self._next <= 1.0 + 1e-9:
            self.stream.write(f"{self.label}: {self._next:.0%} ({min(self.done, self.total)}/{self.total})\n")
            self.stream.flush()
            self._next += 0.1

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


# --------------------------------------------------------------------------------------------- command

@click.command("csv")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--institution", required=True, help="the issuing institution's id (codes/data/institutions.yaml)")
@click.option("--profile", "profile_name", required=True,
              help="column profile: a name in adapters/profiles/ (lis-generic-zh, …) or a path to a YAML file")
@click.option("--encoding", default=None, help="auto, utf-8, gbk, gb18030, … (default: the profile's)")
@click.option("--delimiter", default=None, help="auto, comma, tab, semicolon, bar (default: the profile's)")
@click.option("--dry-run", is_flag=True, help="check every row and report; publish nothing")
def csv(file: Path, institution: str, profile_name: str, encoding: str | None, delimiter: str | None,
        dry_run: bool) -> None:
    """Publish lab results from an LIS export FILE (CSV/TSV, one observation per row).

    Every bad row is listed with its line number and sent to hr.deadletter.v1; a report with any bad row
    is rejected as a whole. Exit 0: all published; 1: rows rejected or file refused; 2: broker unavailable
    (re-running the same file is safe).
    """
    from adapters.pipeline import ResultPipeline
    from exchange import runtime
    from exchange.config import Settings
    from adapters.publish import Publisher

    if delimiter is not None and delimiter not in DELIMITERS:
        raise click.BadParameter("use auto, comma, tab, semicolon or bar", param_hint="--delimiter")
    try:
        profile = load_profile(profile_name)
        if encoding and encoding != "auto":
            _codec(encoding)
    except ProfileError as exc:
        click.echo(f"{file}: refused: {exc}", err=True)
        sys.exit(1)
    settings = Settings.from_env()
    publisher = None if dry_run else Publisher(runtime.require_bootstrap(settings), client_id="hrx-adapter-csv")
    pipeline = ResultPipeline(runtime.codebook(settings), runtime.pseudonymizer(settings), publisher)
    try:
        summary = import_file(file, institution, profile, pipeline, encoding=encoding, delimiter=delimiter,
                              dry_run=dry_run, progress=RowProgress)
    finally:
        if publisher is not None:
            publisher.close()
    for problem in summary.problems:
        click.echo(f"{file}: {problem}", err=True)
    for line in summary.lines():
        click.echo(line, err=bool(summary.refused))
    sys.exit(summary.exit_code)

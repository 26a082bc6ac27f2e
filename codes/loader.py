"""Load a code data directory into records, collecting every problem with file and line.

The loader never stops at the first problem: operators fix a published list in one pass.
:func:`load_dir` returns the parsed data and the problems; :func:`codes.load_codebook` raises
:class:`~codes.model.CodeError` when there are any.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator

from codes.calendar import BEIJING, beijing_date
from codes.loinc import is_loinc_system, loinc_problem
from codes.model import (
    CATEGORIES, EXAM_CATEGORIES, GRADE_ALIASES, GRADES, KINDS, LAB_CATEGORIES, LAB_KINDS, QC_LEVELS,
    TECHNIQUES, TIER_QC_LEVEL, TIERS, Alliance, Catalogue, CatalogueItem, GradeOverlay, ImagingMappingRow,
    ImagingMappingTable, Institution, Item, ItemBound, MappingRow, MappingTable, Problem, QcCertificate, Region,
)
from codes.names import normalize_name
from codes.sources import DUP_KEYS, SourceError, csv_header, csv_rows, line_of, load_yaml
from codes.units import UcumError, validate_ucum
from schemas.events import InvalidEvent, validate as validate_event


ITEM_FIELDS = (
    "code", "name_zh", "name_en", "kind", "category", "specimen", "loinc", "unit", "modality", "body_part",
    "technique", "components", "price_cny",
)
BOUND_FIELDS = ("code", "min", "max", "unit")
MAPPING_FIELDS = ("local_code", "unified_code")
MAPPING_OPTIONAL = ("system", "qualifier", "local_name", "source_unit", "factor", "offset", "note")
LOINC_EQUIVALENT_FIELDS = ("unified_code", "loinc", "note")
IMAGING_MAPPING_FIELDS = ("unified_code",)
IMAGING_MAPPING_OPTIONAL = ("system", "procedure_code", "requested_procedure", "study_description", "modality",
                            "body_part", "technique", "local_name", "note")
ALLIANCE_KINDS = ("close_knit", "city_group", "county_community")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_DIV_RE = re.compile(r"^\d{6}$")
_DICOM_CS_RE = re.compile(r"^[A-Z0-9_ ]{1,16}$")  # DICOM CS value representation
REASON_CODE_FIELDS = ("code", "reason_zh", "reason_en", "counts_as_non_recognition", "note_required")
SHIPPED_DIR = Path(__file__).resolve().parent / "data"
REASON_CODES_FILE = "reason_codes.csv"
_YES_NO = {"yes": True, "no": False}
# A rejection as the decision event contract sees it: a reason code must be one the event can carry.
_REJECTION = {
    "schema": "hr.decision.v1", "event_id": "00000000-0000-4000-8000-000000000000", "decision_id": "-",
    "result": {"issuer": "-", "result_id": "-", "version": 1, "item": None}, "patient": "0" * 64,
    "requesting_institution": "-", "clinician_id": "-", "encounter_id": "-", "order_id": None, "trigger": "order",
    "decision": "reject", "decided_at": "2025-01-01T00:00:00+08:00",
}


@dataclass(frozen=True)
class ReasonCode:
    """A coded reason for repeating a test instead of reusing a recognizable result (docs/rules.md, "Reason
    codes"). ``counts_as_non_recognition`` False takes a rejection out of the recognition rate's denominator;
    ``note_required`` makes a free-text note mandatory."""

    code: str
    zh: str
    en: str
    counts_as_non_recognition: bool
    note_required: bool


@dataclass
class Data:
    """Everything read from one data directory (mutable while loading)."""

    root: Path
    divisions: dict[str, tuple[str, str]] = field(default_factory=dict)
    regions: dict[str, Region] = field(default_factory=dict)
    alliances: dict[str, Alliance] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    item_lines: dict[str, int] = field(default_factory=dict)
    bounds: dict[str, ItemBound] = field(default_factory=dict)
    loinc_lines: dict[str, str] = field(default_factory=dict)  # every LOINC code in use -> "file:line"
    aliases: dict[str, str] = field(default_factory=dict)
    imaging_aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    institutions: dict[str, Institution] = field(default_factory=dict)
    prices: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    mappings: dict[str, list[MappingTable]] = field(default_factory=dict)
    imaging_mappings: dict[str, list[ImagingMappingTable]] = field(default_factory=dict)
    catalogues: list[Catalogue] = field(default_factory=list)
    reason_codes: dict[str, ReasonCode] = field(default_factory=dict)
    reason_codes_file: Path | None = None  # root's own file, or the shipped one when root has none


class Sink:
    """Collects problems for one file."""

    def __init__(self, problems: list[Problem], file: Path | str) -> None:
        self.problems = problems
        self.file = str(file)

    def __call__(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))


# ---------------------------------------------------------------------------------------------
# small parsers


def to_datetime(value: Any) -> datetime | None:
    """A YAML date/datetime/ISO string as a tz-aware datetime; dates are midnight Asia/Shanghai."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=BEIJING)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=BEIJING)
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return datetime.combine(date.fromisoformat(text), time(0), tzinfo=BEIJING)
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"not an ISO date or datetime: {value!r}") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=BEIJING)
    raise ValueError(f"not a date: {value!r}")


def to_date(value: Any) -> date | None:
    """A YAML date or ISO string as a date."""
    if value is None:
        return None
    if isinstance(value, datetime):  # a date-only field given as an instant: its Beijing date
        return beijing_date(value) if value.tzinfo is not None else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"not an ISO date: {value!r}") from exc
    raise ValueError(f"not a date: {value!r}")


def province_of(code: str) -> str:
    """Normalise a province given as 2 digits or as a 6-digit GB/T 2260 code to 2 digits."""
    code = str(code).strip()
    return code[:2] if len(code) == 6 and code.endswith("0000") else code


def division_level(code: str) -> str:
    """'province' (xx0000), 'city' (xxxx00) or 'county' for a 6-digit GB/T 2260 code."""
    if code.endswith("0000"):
        return "province"
    if code.endswith("00"):
        return "city"
    return "county"


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _dups(node: Any, sink: Sink) -> None:
    if isinstance(node, dict):
        for key, line in node.get(DUP_KEYS, []):
            sink(line, f"duplicate key {key!r}")


def _yaml_list(path: Path, key: str, problems: list[Problem]) -> tuple[list[Any], Sink] | None:
    sink = Sink(problems, path)
    if not path.exists():
        sink(0, "file missing")
        return None
    try:
        doc = load_yaml(path)
    except SourceError as exc:
        sink(exc.line, exc.message)
        return None
    if isinstance(doc, dict) and key in doc:
        doc = doc[key]
    if doc is None:
        return [], sink
    if not isinstance(doc, list):
        sink(1, f"expected a list (or a mapping with key {key!r})")
        return None
    return doc, sink


# ---------------------------------------------------------------------------------------------
# reference files


def load_divisions(data: Data, problems: list[Problem]) -> None:
    """divisions.csv: code,name_zh,name_en — the GB/T 2260 codes the data may use."""
    path = data.root / "divisions.csv"
    sink = Sink(problems, path)
    if not path.exists():
        sink(0, "file missing")
        return
    for line, row in csv_rows(path):
        code = row.get("code", "")
        if not _DIV_RE.match(code):
            sink(line, f"division code {code!r} must be 6 digits (GB/T 2260)")
            continue
        if code in data.divisions:
            sink(line, f"duplicate division code {code}")
            continue
        if not row.get("name_zh"):
            sink(line, f"division {code} has no name_zh")
        data.divisions[code] = (row.get("name_zh", ""), row.get("name_en", ""))
    for code in data.divisions:
        level = division_level(code)
        parents = [code[:2] + "0000"] + ([code[:4] + "00"] if level == "county" else [])
        for parent in parents:
            if parent not in data.divisions:
                sink(0, f"division {code} has no parent {parent} in divisions.csv")


def _identified(doc: list[Any], sink: Any, kind: str, taken: Any,
                hint: str = "") -> Iterator[tuple[dict[str, Any], int, str]]:
    """Each well-formed entry of a YAML list with its line and id; every malformed one is reported instead.

    An entry must be a mapping without duplicate keys, with an id of the allowed shape that ``taken(id)``
    does not already claim.
    """
    for node in doc:
        if not isinstance(node, dict):
            sink(0, f"{kind} entry must be a mapping")
            continue
        _dups(node, sink)
        line = line_of(node)
        ident = _str(node.get("id"))
        if not ident or not _ID_RE.match(ident):
            sink(line, f"bad {kind} id {ident!r}{hint}")
            continue
        if taken(ident):
            sink(line, f"duplicate {kind} id {ident}" + (" (ids must differ from regions too)"
                                                          if kind == "alliance" else ""))
            continue
        yield node, line, ident


def load_regions(data: Data, problems: list[Problem]) -> None:
    """regions.yaml: list of {id, name_zh, name_en, provinces, lab_only_provinces}."""
    got = _yaml_list(data.root / "regions.yaml", "regions", problems)
    if got is None:
        return
    doc, sink = got
    for node, line, rid in _identified(doc, sink, "region", data.regions.__contains__):
        provinces: set[str] = set()
        lab_only: set[str] = set()
        for key, target in (("provinces", provinces), ("lab_only_provinces", lab_only)):
            for p in node.get(key) or []:
                prov = province_of(str(p))
                if prov + "0000" not in data.divisions:
                    sink(line_of(node, key), f"region {rid}: unknown province code {p!r}")
                target.add(prov)
        if not provinces:
            sink(line, f"region {rid} lists no provinces")
        data.regions[rid] = Region(rid, _str(node.get("name_zh")) or rid, _str(node.get("name_en")) or rid,
                                   frozenset(provinces), frozenset(lab_only))


def load_alliances(data: Data, problems: list[Problem]) -> None:
    """alliances.yaml: list of {id, name_zh, kind}; members are declared on institutions."""
    got = _yaml_list(data.root / "alliances.yaml", "alliances", problems)
    if got is None:
        return
    doc, sink = got
    for node, line, aid in _identified(doc, sink, "alliance",
                                       lambda a: a in data.alliances or a in data.regions or a == "national"):
        kind = _str(node.get("kind"))
        if kind not in ALLIANCE_KINDS:
            sink(line_of(node, "kind"), f"alliance {aid}: kind must be one of {', '.join(ALLIANCE_KINDS)}")
        data.alliances[aid] = Alliance(aid, _str(node.get("name_zh")) or aid, kind or "")


def load_items(data: Data, problems: list[Problem]) -> None:
    """items.csv: one unified item per row (see README for columns)."""
    path = data.root / "items.csv"
    sink = Sink(problems, path)
    if not path.exists():
        sink(0, "file missing")
        return
    header = csv_header(path)
    missing = [f for f in ITEM_FIELDS if f not in header]
    if missing:
        sink(1, f"missing column(s): {', '.join(missing)}")
        return
    loincs: dict[str, int] = {}
    names: dict[str, int] = {}
    imaging_keys: dict[tuple[str, str, str], int] = {}
    pending_components: list[tuple[int, str, list[str]]] = []
    for line, row in csv_rows(path):
        code = row["code"]
        if not _CODE_RE.match(code):
            sink(line, f"bad item code {code!r}")
            continue
        if code in data.items:
            sink(line, f"duplicate item code {code} (first on line {data.item_lines[code]})")
            continue
        kind, category = row["kind"], row["category"]
        if kind not in KINDS:
            sink(line, f"{code}: kind {kind!r} must be one of {', '.join(KINDS)}")
        if kind in LAB_KINDS and category not in LAB_CATEGORIES:
            sink(line, f"{code}: lab category {category!r} must be one of {', '.join(LAB_CATEGORIES)}")
        if kind in ("imaging", "function") and category not in EXAM_CATEGORIES:
            sink(line, f"{code}: exam category {category!r} must be one of {', '.join(EXAM_CATEGORIES)}")
        if not row["name_zh"]:
            sink(line, f"{code}: name_zh is empty")
        norm = normalize_name(row["name_zh"])
        if norm and norm in names:
            sink(line, f"{code}: name_zh {row['name_zh']!r} duplicates line {names[norm]} (names must be unique for import)")
        names.setdefault(norm, line)
        loinc = row["loinc"] or None
        if loinc:
            if (msg := loinc_problem(loinc)) is not None:
                sink(line, f"{code}: {msg}")
            elif loinc in loincs:
                sink(line, f"{code}: LOINC {loinc} already used on line {loincs[loinc]}")
            loincs.setdefault(loinc, line)
            data.loinc_lines.setdefault(loinc, f"items.csv:{line}")
            if kind not in LAB_KINDS:
                sink(line, f"{code}: only lab items carry a LOINC code here")
        unit = row["unit"] or None
        if unit:
            try:
                validate_ucum(unit)
            except UcumError as exc:
                sink(line, f"{code}: unit {unit!r} is not UCUM: {exc}")
        modality = row["modality"] or None
        body_part = row["body_part"] or None
        technique = row["technique"] or None
        if kind == "imaging" and not (modality and body_part and technique):
            sink(line, f"{code}: imaging items need modality, body_part and technique")
        for label, value in (("modality", modality), ("body_part", body_part)):
            if value and not _DICOM_CS_RE.match(value):
                sink(line, f"{code}: {label} {value!r} is not a DICOM code string (upper case, <= 16 chars)")
        if technique and technique not in TECHNIQUES:
            sink(line, f"{code}: technique {technique!r} must be one of {', '.join(TECHNIQUES)}")
        if modality and body_part and technique:
            key = (modality, body_part, technique)
            if key in imaging_keys:
                sink(line, f"{code}: modality/body_part/technique {key} already used on line {imaging_keys[key]}")
            imaging_keys.setdefault(key, line)
        components = [c.strip() for c in row["components"].split(";") if c.strip()]
        if kind == "lab_panel":
            if not components:
                sink(line, f"{code}: a lab panel must list its components")
            pending_components.append((line, code, components))
        elif components:
            sink(line, f"{code}: only lab panels have components")
        price: Decimal | None = None
        if row["price_cny"]:
            try:
                price = Decimal(row["price_cny"])
                if price < 0:
                    raise InvalidOperation
            except InvalidOperation:
                sink(line, f"{code}: price_cny {row['price_cny']!r} is not a non-negative number")
                price = None
        data.items[code] = Item(
            code=code, name_zh=row["name_zh"], name_en=row["name_en"], kind=kind, category=category,
            specimen=row["specimen"] or None, loinc=loinc, unit=unit, modality=modality, body_part=body_part,
            technique=technique, components=tuple(components), price_cny=price,
        )
        data.item_lines[code] = line
    for line, code, components in pending_components:
        for comp in components:
            target = data.items.get(comp)
            if target is None:
                sink(line, f"{code}: unknown component {comp}")
            elif target.kind != "lab_analyte":
                sink(line, f"{code}: component {comp} is not a lab analyte")


def _bound_number(text: str) -> float | None:
    """A bound as written ("" = open); ValueError unless it is a plain finite decimal number."""
    if not text:
        return None
    if not re.fullmatch(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", text):
        raise ValueError(text)
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(text)
    return number


def load_item_bounds(data: Data, problems: list[Problem]) -> None:
    """item_bounds.csv (optional): code,min,max,unit — physically possible values of a lab analyte.

    The unit must be the item's own unit: the bounds are checked after the mapping converted a value to it.
    """
    path = data.root / "item_bounds.csv"
    if not path.exists():
        return
    sink = Sink(problems, path)
    header = csv_header(path)
    missing = [f for f in BOUND_FIELDS if f not in header]
    if missing:
        sink(1, f"missing column(s): {', '.join(missing)}")
        return
    unknown = [h for h in header if h not in BOUND_FIELDS]
    if unknown:
        sink(1, f"unknown column(s): {', '.join(unknown)}")
    lines: dict[str, int] = {}
    for line, row in csv_rows(path):
        code = row.get("code", "")
        item = data.items.get(code)
        if item is None:
            sink(line, f"unknown item code {code!r}")
            continue
        if item.kind != "lab_analyte":
            sink(line, f"{code}: only lab analytes have values to bound, not a {item.kind}")
            continue
        if code in lines:
            sink(line, f"duplicate bounds for {code} (first on line {lines[code]})")
            continue
        lines[code] = line
        try:
            low, high = _bound_number(row.get("min", "")), _bound_number(row.get("max", ""))
        except ValueError as exc:
            sink(line, f"{code}: bound {exc.args[0]!r} is not a finite decimal number")
            continue
        if low is None and high is None:
            sink(line, f"{code}: give min, max or both")
            continue
        if low is not None and high is not None and low >= high:
            sink(line, f"{code}: min {low:g} is not below max {high:g}")
            continue
        unit = row.get("unit") or None
        if unit != item.unit:
            sink(line, f"{code}: unit {unit or '(none)'!s} is not the item's unit {item.unit or '(none)'!s} "
                       "(bounds apply to values converted to the item's unit)")
            continue
        data.bounds[code] = ItemBound(code, low, high, unit)


def load_loinc_equivalents(data: Data, problems: list[Problem]) -> None:
    """loinc_equivalents.csv (optional): unified_code,loinc,note — further LOINC codes of a lab item.

    LOINC has several codes for one analyte (specimen, method, mass or substance concentration). Each code
    must pass its check digit, name a lab item, and belong to one item only: a code listed for two items (or
    also in items.csv) would make a result's item a guess.
    """
    path = data.root / "loinc_equivalents.csv"
    if not path.exists():
        return
    sink = Sink(problems, path)
    header = csv_header(path)
    missing = [f for f in LOINC_EQUIVALENT_FIELDS[:2] if f not in header]
    if missing:
        sink(1, f"missing column(s): {', '.join(missing)}")
        return
    found: dict[str, list[str]] = {}
    for line, row in csv_rows(path):
        code, loinc = row.get("unified_code", ""), row.get("loinc", "")
        item = data.items.get(code)
        if item is None:
            sink(line, f"unknown unified_code {code!r}")
            continue
        if not item.is_lab:
            sink(line, f"{code}: only lab items carry LOINC codes")
            continue
        if (msg := loinc_problem(loinc)) is not None:
            sink(line, f"{code}: {msg}")
            continue
        if loinc in data.loinc_lines:
            sink(line, f"{code}: LOINC {loinc} already belongs to an item ({data.loinc_lines[loinc]}); "
                       "one LOINC code maps to one item only")
            continue
        data.loinc_lines[loinc] = f"{path.name}:{line}"
        found.setdefault(code, []).append(loinc)
    for code, codes in found.items():
        data.items[code] = replace(data.items[code], loinc_equivalents=tuple(codes))


def load_aliases(data: Data, problems: list[Problem]) -> None:
    """aliases.csv (optional): alias,item_code — extra names for import matching."""
    path = data.root / "aliases.csv"
    if not path.exists():
        return
    sink = Sink(problems, path)
    item_names = {normalize_name(i.name_zh): i.code for i in data.items.values()}
    for line, row in csv_rows(path):
        alias, code = row.get("alias", ""), row.get("item_code", "")
        if code not in data.items:
            sink(line, f"unknown item code {code!r}")
            continue
        norm = normalize_name(alias)
        if not norm:
            sink(line, "empty alias")
            continue
        other = data.aliases.get(norm) or item_names.get(norm)
        if other is not None and other != code:
            sink(line, f"alias {alias!r} already names {other}")
            continue
        data.aliases[norm] = code


def load_imaging_aliases(data: Data, problems: list[Problem]) -> None:
    """imaging_aliases.csv (optional): field,alias,value — e.g. body_part,BRAIN,HEAD."""
    path = data.root / "imaging_aliases.csv"
    if not path.exists():
        return
    sink = Sink(problems, path)
    for line, row in csv_rows(path):
        fld, alias, value = row.get("field", ""), row.get("alias", ""), row.get("value", "")
        if fld not in ("modality", "body_part", "technique"):
            sink(line, f"field must be modality, body_part or technique, not {fld!r}")
            continue
        if not alias or not value:
            sink(line, "alias and value are required")
            continue
        key = (fld, alias.upper() if fld != "technique" else alias.lower())
        if key in data.imaging_aliases:
            sink(line, f"duplicate alias {alias!r} for {fld}")
        data.imaging_aliases[key] = value


def load_prices(data: Data, problems: list[Problem]) -> None:
    """prices.csv (optional): item_code,province,price_cny — provincial overrides of price_cny."""
    path = data.root / "prices.csv"
    if not path.exists():
        return
    sink = Sink(problems, path)
    for line, row in csv_rows(path):
        code, prov = row.get("item_code", ""), province_of(row.get("province", ""))
        if code not in data.items:
            sink(line, f"unknown item code {code!r}")
            continue
        if prov + "0000" not in data.divisions:
            sink(line, f"unknown province {row.get('province')!r}")
            continue
        try:
            price = Decimal(row.get("price_cny", ""))
        except InvalidOperation:
            sink(line, f"price_cny {row.get('price_cny')!r} is not a number")
            continue
        if (code, prov) in data.prices:
            sink(line, f"duplicate price for {code} in province {prov}")
        data.prices[(code, prov)] = price


def load_reason_codes(data: Data, problems: list[Problem]) -> None:
    """reason_codes.csv: code,reason_zh,reason_en,counts_as_non_recognition,note_required.

    The directory's own file when it has one (it replaces the shipped list as a whole), else the shipped
    ``codes/data/reason_codes.csv``: the national codes apply wherever an operator has not written its own.
    """
    path = data.root / REASON_CODES_FILE
    if not path.exists():
        path = SHIPPED_DIR / REASON_CODES_FILE
    data.reason_codes_file = path
    sink = Sink(problems, path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        sink(0, f"not UTF-8: {exc}")
        return
    rows = list(csv_rows(path, text))
    missing = [f for f in REASON_CODE_FIELDS if f not in csv_header(path, text)]
    if missing:
        sink(1, f"missing column(s): {', '.join(missing)}")
        return
    for line, row in rows:
        code = row["code"]
        if not _CODE_RE.match(code):
            sink(line, f"bad reason code {code!r}")
            continue
        if code in data.reason_codes:
            sink(line, f"duplicate reason code {code}")
            continue
        if not row["reason_zh"]:
            sink(line, f"reason {code}: reason_zh is empty")
        for name in ("counts_as_non_recognition", "note_required"):
            if row[name] not in _YES_NO:
                sink(line, f"reason {code}: {name} must be yes or no, not {row[name]!r}")
        if (message := _contract_problem(code, row["note_required"] == "yes")) is not None:
            sink(line, message)
        data.reason_codes[code] = ReasonCode(code, row["reason_zh"], row["reason_en"],
                                             _YES_NO.get(row["counts_as_non_recognition"], True),
                                             _YES_NO.get(row["note_required"], False))
    if not rows:
        sink(0, "no reason codes: a rejection could not be recorded")


def _contract_problem(code: str, note_required: bool) -> str | None:
    """Why the decision event (schemas/decision.v1.json) could not carry a rejection for ``code`` recorded
    as this file allows it, or None: a decision the exchange stores must reach the issuer."""
    try:
        validate_event("decision.v1", {**_REJECTION, "reason_code": code, "note": "-"})
    except InvalidEvent:
        return f"reason {code}: not a reason code the decision event contract (schemas/decision.v1.json) carries"
    if not note_required:
        try:
            validate_event("decision.v1", {**_REJECTION, "reason_code": code, "note": None})
        except InvalidEvent:
            return f"reason {code}: the decision event contract requires a note for it: note_required must be yes"
    return None


def _qc_scope_ok(level: str, scope: str, data: Data) -> bool:
    if level == "national":
        return scope == "national"
    if level == "region":
        return scope in data.regions
    if scope not in data.divisions:
        return False
    return division_level(scope) == ("province" if level == "province" else "city")


def load_institutions(data: Data, problems: list[Problem]) -> None:
    """institutions.yaml: list of institutions with grade, division, alliances and QC certificates."""
    got = _yaml_list(data.root / "institutions.yaml", "institutions", problems)
    if got is None:
        return
    doc, sink = got
    for node, line, iid in _identified(doc, sink, "institution", data.institutions.__contains__,
                                       " (lower case letters, digits, '-', '_', '.')"):
        grade = _str(node.get("grade")) or ""
        grade = GRADE_ALIASES.get(grade, grade)
        if grade not in GRADES:
            sink(line_of(node, "grade"), f"{iid}: grade {grade!r} must be one of {', '.join(GRADES)}")
        division = _str(node.get("division")) or ""
        if not _DIV_RE.match(division) or division not in data.divisions:
            sink(line_of(node, "division"), f"{iid}: division {division!r} is not a known GB/T 2260 code (divisions.csv)")
        alliances = tuple(str(a) for a in node.get("alliances") or [])
        for a in alliances:
            if a not in data.alliances:
                sink(line_of(node, "alliances"), f"{iid}: unknown alliance {a!r}")
        certs: list[QcCertificate] = []
        for cert in node.get("qc") or []:
            cline = line_of(cert) or line_of(node, "qc")
            if not isinstance(cert, dict):
                sink(cline, f"{iid}: qc entry must be a mapping")
                continue
            level = _str(cert.get("level")) or ""
            scope = _str(cert.get("scope")) or ("national" if level == "national" else "")
            if level not in QC_LEVELS:
                sink(cline, f"{iid}: qc level {level!r} must be one of {', '.join(QC_LEVELS)}")
                continue
            if not _qc_scope_ok(level, scope, data):
                sink(cline, f"{iid}: qc scope {scope!r} does not fit level {level}")
            item, category = _str(cert.get("item")), _str(cert.get("category"))
            if (item is None) == (category is None):
                sink(cline, f"{iid}: qc entry needs exactly one of item or category")
            if item is not None and item not in data.items:
                sink(cline, f"{iid}: qc names unknown item {item}")
            if category is not None and category not in CATEGORIES:
                sink(cline, f"{iid}: qc names unknown category {category}")
            try:
                vf, vt = to_date(cert.get("valid_from")), to_date(cert.get("valid_to"))
            except ValueError as exc:
                sink(cline, f"{iid}: {exc}")
                continue
            if vf is None:
                sink(cline, f"{iid}: qc entry needs valid_from")
                continue
            if vt is not None and vt < vf:
                sink(cline, f"{iid}: qc valid_to {vt} is before valid_from {vf}")
            certs.append(QcCertificate(level, scope, item, category, vf, vt))
        data.institutions[iid] = Institution(
            id=iid, name_zh=_str(node.get("name_zh")) or iid, name_en=_str(node.get("name_en")) or "",
            grade=grade, division=division, alliances=alliances, qc=tuple(certs),
        )
    members = {a for inst in data.institutions.values() for a in inst.alliances}
    for aid in data.alliances:
        if aid not in members:
            problems.append(Problem(str(data.root / "alliances.yaml"), 0, f"alliance {aid} has no member institutions"))


# ---------------------------------------------------------------------------------------------
# mapping tables


def version_key(version: str) -> tuple[Any, ...]:
    """Natural sort key: v2 < v10, 2024-01 < 2024-07."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version))


def load_mappings(data: Data, problems: list[Problem]) -> None:
    """mappings/<institution_id>/<version>.csv — each version a full table; the highest applies."""
    root = data.root / "mappings"
    if not root.exists():
        return
    for inst_dir in sorted(p for p in root.iterdir()):
        if not inst_dir.is_dir():
            problems.append(Problem(str(inst_dir), 0, "expected a directory mappings/<institution_id>/ holding <version>.csv files"))
            continue
        if inst_dir.name not in data.institutions:
            problems.append(Problem(str(inst_dir), 0, f"unknown institution {inst_dir.name!r}"))
            continue
        tables = []
        for path in sorted(inst_dir.glob("*.csv")):
            table = load_mapping_table(path, inst_dir.name, data, problems)
            if table is not None:
                tables.append(table)
        tables.sort(key=lambda t: version_key(t.version))
        if tables:
            data.mappings[inst_dir.name] = tables


def load_mapping_table(path: Path, institution_id: str, data: Data, problems: list[Problem]) -> MappingTable | None:
    """Parse one mapping table version; rows keyed by (system, local_code, qualifier)."""
    sink = Sink(problems, path)
    header = csv_header(path)
    missing = [f for f in MAPPING_FIELDS if f not in header]
    if missing:
        sink(1, f"missing column(s): {', '.join(missing)}")
        return None
    unknown = [h for h in header if h not in MAPPING_FIELDS + MAPPING_OPTIONAL]
    if unknown:
        sink(1, f"unknown column(s): {', '.join(unknown)}")
    rows: dict[tuple[str, str, str], MappingRow] = {}
    for line, row in csv_rows(path):
        system = (row.get("system") or "local").strip()
        system = "LN" if is_loinc_system(system) else system
        local, qual = row.get("local_code", ""), row.get("qualifier", "")
        target = row.get("unified_code", "")
        if not local:
            sink(line, "local_code is empty")
            continue
        item = data.items.get(target)
        if item is None:
            sink(line, f"unknown unified_code {target!r}")
            continue
        if not item.is_lab:
            sink(line, f"{target} is an exam item ({item.kind}): map studies in "
                       f"imaging_mappings/{institution_id}/<version>.csv")
            continue
        if system == "LN" and (msg := loinc_problem(local)) is not None:
            sink(line, msg)
        source_unit = row.get("source_unit") or None
        if source_unit:
            try:
                validate_ucum(source_unit)
            except UcumError as exc:
                sink(line, f"source_unit {source_unit!r} is not UCUM: {exc}")
        try:
            factor = float(row["factor"]) if row.get("factor") else 1.0
            offset = float(row["offset"]) if row.get("offset") else 0.0
        except ValueError:
            sink(line, f"factor/offset must be numbers: {row.get('factor')!r}, {row.get('offset')!r}")
            continue
        if factor == 0:
            sink(line, "factor must not be 0")
        if source_unit and item.unit and source_unit != item.unit and not row.get("factor"):
            sink(line, f"{local}: source_unit {source_unit} differs from {target}'s unit {item.unit} but no factor is given")
        if source_unit and item.unit is None:
            sink(line, f"{local}: {target} has no unit, so source_unit must be empty")
        key = (system, local, qual)
        if key in rows:
            sink(line, f"duplicate mapping for {local!r} qualifier {qual!r} (first on line {rows[key].line})")
            continue
        rows[key] = MappingRow(system, local, qual, row.get("local_name") or None, target, source_unit,
                               factor, offset, row.get("note") or None, line)
    return MappingTable(institution_id, path.stem, MappingProxyType(rows), str(path))


def load_imaging_mappings(data: Data, problems: list[Problem]) -> None:
    """imaging_mappings/<institution_id>/<version>.csv — versioned like the lab tables; the highest applies."""
    root = data.root / "imaging_mappings"
    if not root.exists():
        return
    for inst_dir in sorted(p for p in root.iterdir()):
        if not inst_dir.is_dir():
            problems.append(Problem(str(inst_dir), 0, "expected a directory imaging_mappings/<institution_id>/ "
                                                      "holding <version>.csv files"))
            continue
        if inst_dir.name not in data.institutions:
            problems.append(Problem(str(inst_dir), 0, f"unknown institution {inst_dir.name!r}"))
            continue
        tables = [t for t in (load_imaging_mapping_table(path, inst_dir.name, data, problems)
                              for path in sorted(inst_dir.glob("*.csv"))) if t is not None]
        tables.sort(key=lambda t: version_key(t.version))
        if tables:
            data.imaging_mappings[inst_dir.name] = tables


def description_key(text: str) -> str:
    """How descriptions are compared: :func:`codes.names.normalize_name` (width, case, spaces, punctuation)."""
    return normalize_name(text)


def load_imaging_mapping_table(path: Path, institution_id: str, data: Data,
                               problems: list[Problem]) -> ImagingMappingTable | None:
    """Parse one imaging mapping table version; each row has exactly one kind of key (see ImagingMappingRow)."""
    sink = Sink(problems, path)
    header = csv_header(path)
    if "unified_code" not in header:
        sink(1, "missing column(s): unified_code")
        return None
    unknown = [h for h in header if h not in IMAGING_MAPPING_FIELDS + IMAGING_MAPPING_OPTIONAL]
    if unknown:
        sink(1, f"unknown column(s): {', '.join(unknown)}")
    rows: dict[tuple[str, ...], ImagingMappingRow] = {}
    for line, row in csv_rows(path):
        target = row.get("unified_code", "")
        item = data.items.get(target)
        if item is None:
            sink(line, f"unknown unified_code {target!r}")
            continue
        if item.is_lab:
            sink(line, f"{target} is a lab item: map lab codes in mappings/{institution_id}/<version>.csv")
            continue
        code, requested, described = (row.get(k, "") for k in ("procedure_code", "requested_procedure",
                                                                 "study_description"))
        modality, body_part = row.get("modality", "").upper(), row.get("body_part", "").upper()
        technique = row.get("technique", "").lower()
        for label, value in (("modality", modality), ("body_part", body_part)):
            if value and not _DICOM_CS_RE.match(value):
                sink(line, f"{label} {value!r} is not a DICOM code string (upper case, <= 16 chars)")
        if technique and technique not in TECHNIQUES:
            sink(line, f"technique {technique!r} must be one of {', '.join(TECHNIQUES)}")
        keys = [k for k, v in (("procedure_code", code), ("requested_procedure", requested),
                               ("study_description", described)) if v]
        if len(keys) > 1:
            sink(line, f"a row has one key: {' and '.join(keys)} are both filled")
            continue
        if keys == ["procedure_code"]:
            if body_part or technique or modality:
                sink(line, "a procedure-code row takes no modality, body_part or technique")
            key: tuple[str, ...] = ("procedure_code", row.get("system", ""), code)
        elif keys:
            if body_part or technique:
                sink(line, "a description row may name a modality, but no body_part or technique")
            key = (keys[0], description_key(requested or described), modality)
        elif modality and technique:
            key = ("shape", modality, body_part, technique)
        else:
            sink(line, "a row needs a procedure_code, a requested_procedure, a study_description, "
                       "or modality + technique (+ body_part)")
            continue
        if key in rows:
            sink(line, f"duplicate {key[0]} row (first on line {rows[key].line})")
            continue
        rows[key] = ImagingMappingRow(key[0], key[1:], target, row.get("local_name") or None,
                                      row.get("note") or None, line)
    return ImagingMappingTable(institution_id, path.stem, MappingProxyType(rows), str(path))


# ---------------------------------------------------------------------------------------------
# catalogues


def _scope_problem(tier: str, scope: str, data: Data) -> tuple[str, str | None]:
    """Normalise a scope and say what is wrong with it (None when fine)."""
    if tier == "alliance":
        return scope, None if scope in data.alliances else f"unknown alliance {scope!r}"
    if tier == "region":
        return scope, None if scope in data.regions else f"unknown region {scope!r}"
    if tier == "national":
        return scope, None if scope == "national" else "national catalogues have scope 'national'"
    if tier == "province":
        norm = scope + "0000" if re.fullmatch(r"\d{2}", scope) else scope
        if not _DIV_RE.match(norm) or division_level(norm) != "province" or norm not in data.divisions:
            return norm, f"scope {scope!r} is not a known province code (e.g. 330000 or 33)"
        return norm, None
    if tier == "city":
        norm = scope + "00" if re.fullmatch(r"\d{4}", scope) else scope
        if not _DIV_RE.match(norm) or division_level(norm) != "city" or norm not in data.divisions:
            return norm, f"scope {scope!r} is not a known prefecture-level city code (e.g. 330100 or 3301)"
        return norm, None
    return scope, f"unknown tier {tier!r}"


def _valid_days(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def parse_catalogue(path: Path, data: Data, problems: list[Problem]) -> Catalogue | None:
    """Parse and check one catalogue file against the loaded items, alliances, regions, divisions."""
    sink = Sink(problems, path)
    try:
        doc = load_yaml(path)
    except SourceError as exc:
        sink(exc.line, exc.message)
        return None
    if not isinstance(doc, dict):
        sink(1, "a catalogue file must be a YAML mapping")
        return None
    _dups(doc, sink)
    known = {"id", "name_zh", "tier", "scope", "authority", "version", "effective_from", "effective_to", "qc_level",
             "waive_qc", "all_items", "default_valid_days", "grade_overlays", "items", "notes"}
    for key in doc:
        if isinstance(key, str) and not key.startswith("__") and key not in known:
            sink(line_of(doc, key), f"unknown field {key!r}")
    ok = True
    cid = _str(doc.get("id"))
    if not cid or not _ID_RE.match(cid):
        sink(line_of(doc, "id") or 1, f"bad or missing catalogue id {cid!r}")
        ok = False
    tier = _str(doc.get("tier")) or ""
    if tier not in TIERS:
        sink(line_of(doc, "tier") or 1, f"tier {tier!r} must be one of {', '.join(TIERS)}")
        ok = False
    scope_raw = _str(doc.get("scope")) or ""
    scope, msg = _scope_problem(tier, scope_raw, data) if tier in TIERS else (scope_raw, None)
    if msg:
        sink(line_of(doc, "scope") or 1, msg)
        ok = False
    authority = _str(doc.get("authority"))
    if not authority:
        sink(line_of(doc, "authority") or 1, "authority is required")
    version = _str(doc.get("version"))
    if not version:
        sink(line_of(doc, "version") or 1, "version is required")
        ok = False
    try:
        eff_from = to_datetime(doc.get("effective_from"))
        eff_to = to_datetime(doc.get("effective_to"))
    except ValueError as exc:
        sink(line_of(doc, "effective_from") or 1, str(exc))
        return None
    if eff_from is None:
        sink(line_of(doc, "effective_from") or 1, "effective_from is required")
        ok = False
    elif eff_to is not None and eff_to <= eff_from:
        sink(line_of(doc, "effective_to"), f"effective_to {eff_to.isoformat()} is not after effective_from")
        ok = False
    waive_qc = bool(doc.get("waive_qc", False))
    all_items = bool(doc.get("all_items", False))
    if all_items and tier != "alliance":
        sink(line_of(doc, "all_items"), "all_items is only allowed for alliance catalogues")
    if waive_qc and tier != "alliance":
        sink(line_of(doc, "waive_qc"), "only alliance catalogues may waive QC")
    qc_level = _str(doc.get("qc_level")) or TIER_QC_LEVEL.get(tier)
    if qc_level not in QC_LEVELS:
        sink(line_of(doc, "qc_level"), f"qc_level {qc_level!r} must be one of {', '.join(QC_LEVELS)}")
        qc_level = TIER_QC_LEVEL.get(tier)
    default_qc = None if waive_qc else qc_level
    dvd_raw = doc.get("default_valid_days", 30)
    by_kind: dict[str, int] = {}
    if isinstance(dvd_raw, dict):
        for k, v in dvd_raw.items():
            if isinstance(k, str) and k.startswith("__"):
                continue
            if k not in KINDS and k != "default":
                sink(line_of(dvd_raw, k), f"default_valid_days: unknown kind {k!r}")
            elif _valid_days(v) is None:
                sink(line_of(dvd_raw, k), f"default_valid_days.{k} must be a positive integer")
            else:
                by_kind[k] = v
        default_days = by_kind.pop("default", 30)
    else:
        default_days = _valid_days(dvd_raw) or 0
        if not default_days:
            sink(line_of(doc, "default_valid_days"), "default_valid_days must be a positive integer")
            default_days = 30
    overlays: list[GradeOverlay] = []
    for ov in doc.get("grade_overlays") or []:
        oline = line_of(ov) or line_of(doc, "grade_overlays")
        if not isinstance(ov, dict):
            sink(oline, "grade overlay must be a mapping")
            continue
        req = [GRADE_ALIASES.get(str(g), str(g)) for g in ov.get("requester_grades") or []]
        iss = [GRADE_ALIASES.get(str(g), str(g)) for g in ov.get("issuer_grades") or []]
        for g in req + iss:
            if g not in GRADES:
                sink(oline, f"unknown grade {g!r} in grade overlay")
        if not req or not iss:
            sink(oline, "grade overlay needs requester_grades and issuer_grades")
        overlays.append(GradeOverlay(frozenset(req), frozenset(iss), _str(ov.get("note"))))

    def days_for(code: str) -> int:
        item = data.items.get(code)
        return by_kind.get(item.kind, default_days) if item is not None else default_days

    items: dict[str, CatalogueItem] = {}
    first_line: dict[str, int] = {}
    raw_items = doc.get("items") or []
    if not isinstance(raw_items, list):
        sink(line_of(doc, "items"), "items must be a list")
        raw_items = []
    for entry in raw_items:
        eline = line_of(entry) or line_of(doc, "items")
        if isinstance(entry, str):
            entry = {"code": entry}
        if not isinstance(entry, dict):
            sink(eline, "item entry must be a mapping like {code: L0001, valid_days: 7}")
            continue
        _dups(entry, sink)
        code = _str(entry.get("code"))
        if not code:
            sink(eline, "item entry without code")
            continue
        if code not in data.items:
            sink(eline, f"unknown item code {code}")
            continue
        if code in items:
            sink(eline, f"duplicate item {code} (first on line {first_line[code]})")
            continue
        vd = entry.get("valid_days")
        days = days_for(code) if vd is None else _valid_days(vd)
        if days is None:
            sink(eline, f"{code}: valid_days must be a positive integer, not {vd!r}")
            continue
        iqc_raw = _str(entry.get("qc_level"))
        if iqc_raw is None:
            iqc = default_qc
        elif iqc_raw == "none":
            iqc = None
            if tier != "alliance":
                sink(eline, f"{code}: only alliance catalogues may waive QC per item")
        elif iqc_raw in QC_LEVELS:
            iqc = iqc_raw
        else:
            sink(eline, f"{code}: qc_level {iqc_raw!r} must be one of {', '.join(QC_LEVELS)} or none")
            iqc = default_qc
        unknown_keys = [k for k in entry if isinstance(k, str) and not k.startswith("__") and k not in ("code", "valid_days", "qc_level", "note")]
        if unknown_keys:
            sink(eline, f"{code}: unknown field(s) {', '.join(unknown_keys)}")
        items[code] = CatalogueItem(code, days, iqc, _str(entry.get("note")))
        first_line[code] = eline
    if all_items:
        for code in data.items:
            items.setdefault(code, CatalogueItem(code, days_for(code), default_qc, None))
    elif not items and ok:
        sink(line_of(doc, "items") or 1, "catalogue lists no items (use all_items: true for an alliance catalogue)")
    if not ok or eff_from is None or cid is None or version is None:
        return None
    return Catalogue(
        id=cid, tier=tier, scope=scope, authority=authority or "", version=version, effective_from=eff_from,
        effective_to=eff_to, qc_level=default_qc, waive_qc=waive_qc, all_items=all_items,
        default_valid_days=default_days, grade_overlays=tuple(overlays), items=MappingProxyType(items), source=str(path),
        name_zh=_str(doc.get("name_zh")), notes=_str(doc.get("notes")), default_valid_days_by_kind=MappingProxyType(by_kind),
    )


def check_catalogue_versions(catalogues: Iterable[Catalogue], problems: list[Problem]) -> None:
    """Versions of one catalogue id must not overlap in time, and keep their tier, scope and version labels distinct."""
    by_id: dict[str, list[Catalogue]] = {}
    for cat in catalogues:
        by_id.setdefault(cat.id, []).append(cat)
    for cid, cats in by_id.items():
        cats.sort(key=lambda c: c.effective_from)
        for i, a in enumerate(cats):
            for b in cats[i + 1:]:
                if a.source == b.source:
                    continue
                if (a.tier, a.scope) != (b.tier, b.scope):
                    problems.append(Problem(b.source, _eff_line(b), f"catalogue {cid}: tier/scope {b.tier}/{b.scope} differs from {a.source} ({a.tier}/{a.scope})"))
                if a.version == b.version:
                    problems.append(Problem(b.source, _eff_line(b), f"catalogue {cid}: version {b.version} also in {a.source}"))
                a_end = a.effective_to
                if a_end is None or b.effective_from < a_end:
                    problems.append(Problem(
                        b.source, _eff_line(b),
                        f"catalogue {cid} version {b.version} (from {b.effective_from.isoformat()}) overlaps version "
                        f"{a.version} in {a.source} (to {a_end.isoformat() if a_end else 'open end'})",
                    ))


def _eff_line(cat: Catalogue) -> int:
    try:
        return line_of(load_yaml(Path(cat.source)), "effective_from")
    except (SourceError, OSError):
        return 0


def load_catalogues(data: Data, problems: list[Problem]) -> None:
    """catalogues/*.yaml — one file per catalogue version."""
    root = data.root / "catalogues"
    if not root.exists():
        return
    for path in sorted(list(root.rglob("*.yaml")) + list(root.rglob("*.yml"))):
        cat = parse_catalogue(path, data, problems)
        if cat is not None:
            data.catalogues.append(cat)
    check_catalogue_versions(data.catalogues, problems)


def load_dir(root: Path) -> tuple[Data, list[Problem]]:
    """Read every file of a data directory; return the data and all problems found."""
    problems: list[Problem] = []
    data = Data(root=root)
    if not root.is_dir():
        return data, [Problem(str(root), 0, "code data directory does not exist")]
    load_divisions(data, problems)
    load_regions(data, problems)
    load_alliances(data, problems)
    load_items(data, problems)
    load_item_bounds(data, problems)
    load_loinc_equivalents(data, problems)
    load_aliases(data, problems)
    load_imaging_aliases(data, problems)
    load_prices(data, problems)
    load_institutions(data, problems)
    load_mappings(data, problems)
    load_imaging_mappings(data, problems)
    load_catalogues(data, problems)
    load_reason_codes(data, problems)
    return data, sorted(set(problems), key=lambda p: (p.file, p.line, p.message))

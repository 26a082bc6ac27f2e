"""Typed, immutable records of the code book (items, institutions, catalogues, mappings).

Everything here is a frozen dataclass built by :mod:`codes.loader`; nothing in this module reads
files. Vocabularies (kinds, categories, grades, tiers, QC levels) are closed sets because the
engine branches on them; everything that varies per province (valid days, catalogues, prices)
lives in the data files instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Mapping as TMapping

from codes.calendar import beijing_date

if TYPE_CHECKING:  # pragma: no cover - typing only
    from codes.book import CodeBook

KINDS: tuple[str, ...] = ("lab_analyte", "lab_panel", "imaging", "function")
LAB_KINDS: frozenset[str] = frozenset({"lab_analyte", "lab_panel"})

# Categories allowed per kind family. body_fluid (stool, CSF) and function (non-electrophysiology
# function exams such as spirometry) extend the list, which had no home for them.
LAB_CATEGORIES: tuple[str, ...] = (
    "biochemistry", "immunology", "haematology", "coagulation", "molecular", "microbiology", "urine", "body_fluid",
)
EXAM_CATEGORIES: tuple[str, ...] = (
    "CT", "MR", "DR", "ultrasound", "nuclear_medicine", "electrophysiology", "function",
)
CATEGORIES: tuple[str, ...] = LAB_CATEGORIES + EXAM_CATEGORIES

# Imaging technique tokens: the DICOM adapter derives them from the study (contrast agent, CTA/MRA
# series, Doppler); ECG/EEG items use resting/ambulatory/exercise.
TECHNIQUES: tuple[str, ...] = (
    "plain", "contrast", "plain+contrast", "angiography", "doppler", "resting", "ambulatory", "exercise",
)

# Institution grades, highest first. 独立实验室 (independent lab) is outside the hospital ladder, so it
# has no rank: grade overlays must name it explicitly.
GRADES: tuple[str, ...] = ("三甲", "三乙", "二甲", "二乙", "一级", "独立实验室")
GRADE_RANK: TMapping[str, int] = {"三甲": 5, "三乙": 4, "二甲": 3, "二乙": 2, "一级": 1}
GRADE_ALIASES: TMapping[str, str] = {"independent_lab": "独立实验室", "independent lab": "独立实验室"}

TIERS: tuple[str, ...] = ("alliance", "city", "province", "region", "national")
QC_LEVELS: tuple[str, ...] = ("city", "province", "region", "national")
QC_LEVEL_RANK: TMapping[str, int] = {"city": 1, "province": 2, "region": 3, "national": 4}
# The QC level a tier requires unless the catalogue says otherwise (§1: scope follows the QC body's level).
# Alliances default to city-level QC but usually waive it (waive_qc: true).
TIER_QC_LEVEL: TMapping[str, str] = {
    "alliance": "city", "city": "city", "province": "province", "region": "region", "national": "national",
}



class CodeError(Exception):
    """The code book could not be loaded; ``problems`` lists every problem with file and line."""

    def __init__(self, problems: "list[Problem]") -> None:
        self.problems = list(problems)
        lines = "\n".join(str(p) for p in self.problems[:50])
        more = f"\n... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{len(self.problems)} problem(s) in code data:\n{lines}{more}")


@dataclass(frozen=True, order=True)
class Problem:
    """One validation finding: ``file:line: message`` (line 0 = whole file)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Item:
    """A unified (互认) item: a lab analyte or panel, an imaging procedure or a function exam."""

    code: str
    name_zh: str
    name_en: str
    kind: str
    category: str
    specimen: str | None
    loinc: str | None
    unit: str | None
    modality: str | None
    body_part: str | None
    technique: str | None
    components: tuple[str, ...]
    price_cny: Decimal | None
    #: Further LOINC codes for the same analyte and a comparable result (``loinc_equivalents.csv``).
    loinc_equivalents: tuple[str, ...] = ()

    @property
    def is_lab(self) -> bool:
        """True for lab analytes and lab panels."""
        return self.kind in LAB_KINDS


@dataclass(frozen=True)
class ItemBound:
    """The physically possible values of a quantitative unified item, in the item's unit; either end may be open.

    Bounds are physical, not clinical: a concentration below 0 or a percentage above 100 cannot be a
    measurement, whereas a value far outside the reference range can. Loaded from ``item_bounds.csv``.
    """

    code: str
    min: float | None
    max: float | None
    unit: str | None


@dataclass(frozen=True)
class Region:
    """A cross-province region. ``lab_only_provinces`` joined for lab items only (京津冀鲁: Shandong)."""

    id: str
    name_zh: str
    name_en: str
    provinces: frozenset[str]
    lab_only_provinces: frozenset[str] = frozenset()

    def includes(self, province: str, item: Item | None = None) -> bool:
        """Is ``province`` (2 digits) inside the region, for ``item`` if given?

        Lab-only member provinces are inside for lab items, and inside when no item is given
        (the caller asks about the institution, not a particular result).
        """
        if province in self.provinces:
            return True
        if province in self.lab_only_provinces:
            return item is None or item.is_lab
        return False


@dataclass(frozen=True)
class Alliance:
    """A medical alliance (紧密型医联体 close_knit, 城市医疗集团 city_group, 县域医共体 county_community)."""

    id: str
    name_zh: str
    kind: str


@dataclass(frozen=True)
class QcCertificate:
    """A passed external quality assessment (室间质评) for one item or one category.

    ``level`` is the level of the QC body (city/province/region/national); ``scope`` its area
    (6-digit division code, region id or ``national``). ``valid_to`` is inclusive; None = open.
    """

    level: str
    scope: str
    item: str | None
    category: str | None
    valid_from: date
    valid_to: date | None

    def covers(self, item: Item, on: date) -> bool:
        """True when this certificate is in force on ``on`` and names the item or its category."""
        if isinstance(on, datetime):  # certificate dates are Beijing dates (docs/rules.md, "Dates")
            on = beijing_date(on) if on.tzinfo is not None else on.date()
        if on < self.valid_from or (self.valid_to is not None and on > self.valid_to):
            return False
        if self.item is not None:
            return self.item == item.code
        return self.category == item.category

    def satisfies(self, required_level: str | None, item: Item, on: date) -> bool:
        """True when it covers ``item`` on ``on`` at ``required_level`` or a higher level.

        ``required_level`` None means no QC is required (alliance waiver): always True.
        """
        if required_level is None:
            return True
        return self.covers(item, on) and QC_LEVEL_RANK[self.level] >= QC_LEVEL_RANK[required_level]


@dataclass(frozen=True)
class Institution:
    """A hospital or independent lab. ``division`` is its GB/T 2260 county-level code (6 digits)."""

    id: str
    name_zh: str
    name_en: str
    grade: str
    division: str
    alliances: tuple[str, ...]
    qc: tuple[QcCertificate, ...]

    @property
    def province(self) -> str:
        """Province code, 2 digits (GB/T 2260: first 2 digits)."""
        return self.division[:2]

    @property
    def city(self) -> str:
        """Prefecture-level city code, 4 digits (first 4 digits; 1101 for Beijing's districts)."""
        return self.division[:4]

    def qc_for(self, item: Item, on: date) -> tuple[QcCertificate, ...]:
        """Certificates covering ``item`` on ``on``, highest level first."""
        found = [c for c in self.qc if c.covers(item, on)]
        return tuple(sorted(found, key=lambda c: -QC_LEVEL_RANK[c.level]))


@dataclass(frozen=True)
class GradeOverlay:
    """Grade rule on top of QC: a requester of ``requester_grades`` accepts only ``issuer_grades``."""

    requester_grades: frozenset[str]
    issuer_grades: frozenset[str]
    note: str | None = None


@dataclass(frozen=True)
class CatalogueItem:
    """One item of a catalogue with its validity window and required QC level (None = no QC needed)."""

    code: str
    valid_days: int
    qc_level: str | None
    note: str | None = None


@dataclass(frozen=True)
class Catalogue:
    """One version of a recognition catalogue (互认目录).

    ``items`` is already resolved: per-item ``valid_days``/``qc_level`` fall back to the catalogue
    defaults, and an ``all_items`` catalogue holds every item of the code book it was loaded with.
    ``effective_from`` is inclusive, ``effective_to`` exclusive (None = open), both tz-aware.
    """

    id: str
    tier: str
    scope: str
    authority: str
    version: str
    effective_from: datetime
    effective_to: datetime | None
    qc_level: str | None
    waive_qc: bool
    all_items: bool
    default_valid_days: int
    grade_overlays: tuple[GradeOverlay, ...]
    items: TMapping[str, CatalogueItem] = field(hash=False)
    source: str = ""
    name_zh: str | None = None
    notes: str | None = None
    default_valid_days_by_kind: TMapping[str, int] = field(default_factory=dict, hash=False)

    def in_force(self, at: datetime) -> bool:
        """effective_from <= at < effective_to (open end when effective_to is None)."""
        return self.effective_from <= at and (self.effective_to is None or at < self.effective_to)

    def item(self, code: str) -> CatalogueItem | None:
        """The catalogue entry for ``code``, or None when the item is not in this catalogue."""
        return self.items.get(code)

    def covers(self, inst: Institution, book: "CodeBook", item: Item | None = None) -> bool:
        """Is ``inst`` inside this catalogue's scope?

        alliance: member of the alliance; city: same first 4 division digits; province: same first
        2; region: province in the region (lab-only members only for lab items when ``item`` is
        given); national: everyone.
        """
        if self.tier == "alliance":
            return self.scope in inst.alliances
        if self.tier == "city":
            return inst.city == self.scope[:4]
        if self.tier == "province":
            return inst.province == self.scope[:2]
        if self.tier == "region":
            region = book.regions.get(self.scope)
            return region is not None and region.includes(inst.province, item)
        return self.tier == "national"

    def grade_allows(self, requester_grade: str, issuer_grade: str) -> bool:
        """Grade overlays: if any overlay lists the requester's grade, the issuer's grade must be
        among the issuer grades of those overlays; with no matching overlay grades do not matter."""
        matching = [o for o in self.grade_overlays if requester_grade in o.requester_grades]
        if not matching:
            return True
        return any(issuer_grade in o.issuer_grades for o in matching)


@dataclass(frozen=True)
class Mapping:
    """Result of mapping a local or LOINC code: ``value_in_target = value * factor + offset``."""

    unified_code: str
    factor: float
    offset: float
    source_unit: str | None
    target_unit: str | None
    table_version: str
    qualifier: str | None = None

    def convert(self, value: float) -> float:
        """Convert a value reported in ``source_unit`` to the item's unit."""
        return value * self.factor + self.offset


@dataclass(frozen=True)
class MappingRow:
    """One row of a hospital mapping table (internal; exposed through ``CodeBook.map_code``)."""

    system: str
    local_code: str
    qualifier: str
    local_name: str | None
    unified_code: str
    source_unit: str | None
    factor: float
    offset: float
    note: str | None
    line: int


@dataclass(frozen=True)
class MappingTable:
    """One version of an institution's mapping table."""

    institution_id: str
    version: str
    rows: TMapping[tuple[str, str, str], MappingRow] = field(hash=False)
    source: str = ""


@dataclass(frozen=True)
class ImagingMappingRow:
    """One row of a hospital's imaging mapping table: what identifies a study, and its unified item.

    Exactly one kind of key is filled: a procedure code (with its coding scheme, empty for any), a
    RequestedProcedureDescription or a StudyDescription (each optionally limited to one Modality), or a study
    shape (Modality + BodyPartExamined + technique; an empty body part matches a study that names none).
    """

    kind: str  # procedure_code | requested_procedure | study_description | shape
    key: tuple[str, ...]
    unified_code: str
    local_name: str | None
    note: str | None
    line: int


@dataclass(frozen=True)
class ImagingMappingTable:
    """One version of an institution's imaging mapping table, rows keyed by ``(kind, *key)``."""

    institution_id: str
    version: str
    rows: TMapping[tuple[str, ...], ImagingMappingRow] = field(hash=False)
    source: str = ""


@dataclass(frozen=True)
class ImagingMapping:
    """A study mapped through an imaging mapping table: the item, the table version and the row's kind."""

    unified_code: str
    table_version: str
    matched_by: str

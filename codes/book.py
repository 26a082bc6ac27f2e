"""The loaded code book and its look-ups (the API the exchange engine uses)."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Mapping as TMapping, Sequence

from codes.calendar import BEIJING
from codes.loinc import is_loinc_system
from codes.loader import REASON_CODES_FILE, SHIPPED_DIR, Data, ReasonCode, description_key, load_dir, province_of
from codes.model import (
    Alliance, Catalogue, CodeError, ImagingMapping, ImagingMappingTable, Institution, Item, ItemBound, Mapping,
    MappingTable, Region,
)

ENV_VAR = "HRX_CODES_DIR"
LOINC_TABLE_VERSION = "loinc"


def default_codes_dir() -> Path:
    """$HRX_CODES_DIR when set, else the shipped demo data (codes/data)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else SHIPPED_DIR


def is_shipped(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is the demo data shipped in the package, which the exchange never edits (an operator's
    mappings and catalogues go into a code directory of their own)."""
    return Path(root).resolve() == SHIPPED_DIR.resolve()


#: Why an edit of the shipped demo data is refused.
SHIPPED_READ_ONLY = ("the exchange runs on the shipped demo code data, which is not edited: start it with a "
                     "code directory of your own (HRX_CODES_DIR or hrx up --codes)")


def data_digest(root: Path, borrowed: TMapping[str, Path] | None = None) -> str:
    """Stable digest of every file under ``root`` (relative path + bytes), for audit records.

    ``borrowed`` names files the book took from elsewhere as if they sat under ``root`` (the shipped reason
    codes for a directory without its own), so equal data gives an equal digest wherever it was read from.
    """
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    files.update(borrowed or {})
    h = hashlib.sha256()
    for name, path in sorted(files.items()):
        h.update(name.encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return "sha256:" + h.hexdigest()[:16]


class CodeBook:
    """Immutable view of one code data directory. Build it with :func:`codes.load_codebook`.

    ``reason_codes`` are the directory's own reason_codes.csv, or the shipped ones when it has none.
    """

    def __init__(self, data: Data, version: str) -> None:
        self._data = data
        self.root: Path = data.root
        self.version: str = version
        self.items: TMapping[str, Item] = MappingProxyType(dict(data.items))
        self.institutions: TMapping[str, Institution] = MappingProxyType(dict(data.institutions))
        self.regions: TMapping[str, Region] = MappingProxyType(dict(data.regions))
        self.alliances: TMapping[str, Alliance] = MappingProxyType(dict(data.alliances))
        self.divisions: TMapping[str, tuple[str, str]] = MappingProxyType(dict(data.divisions))
        self.catalogues: Sequence[Catalogue] = tuple(sorted(data.catalogues, key=lambda c: (c.id, c.effective_from)))
        self.aliases: TMapping[str, str] = MappingProxyType(dict(data.aliases))
        self.bounds: TMapping[str, ItemBound] = MappingProxyType(dict(data.bounds))  # item_bounds.csv by item code
        self._by_loinc = {code: i for i in data.items.values()
                          for code in ((i.loinc,) if i.loinc else ()) + i.loinc_equivalents}
        self._imaging = {
            (i.modality, i.body_part, i.technique): i for i in data.items.values()
            if i.modality and i.body_part and i.technique
        }
        self._imaging_aliases = dict(data.imaging_aliases)
        self._mappings: dict[str, tuple[MappingTable, ...]] = {k: tuple(v) for k, v in data.mappings.items()}
        self._imaging_mappings: dict[str, tuple[ImagingMappingTable, ...]] = {
            k: tuple(v) for k, v in data.imaging_mappings.items()}
        self._prices = dict(data.prices)
        self.reason_codes: TMapping[str, ReasonCode] = MappingProxyType(dict(data.reason_codes))

    # -- items --------------------------------------------------------------------------------

    def item_by_loinc(self, loinc: str) -> Item | None:
        """The unified item carrying this LOINC code in items.csv or in loinc_equivalents.csv, or None."""
        return self._by_loinc.get(loinc.strip()) if loinc else None

    def imaging_item(self, modality: str, body_part: str | None, technique: str | None) -> Item | None:
        """Unified imaging/function item for a DICOM (Modality, BodyPartExamined, technique).

        Values pass through ``imaging_aliases.csv`` (e.g. CR -> DX, BRAIN -> HEAD) and are compared
        upper-case (technique lower-case). A missing technique is taken as ``plain``. Returns None
        when nothing matches exactly: no guessing across body parts.
        """
        if not modality or not body_part:
            return None
        mod = modality.strip().upper()
        mod = self._imaging_aliases.get(("modality", mod), mod)
        part = body_part.strip().upper()
        part = self._imaging_aliases.get(("body_part", part), part)
        tech = (technique or "plain").strip().lower()
        tech = self._imaging_aliases.get(("technique", tech), tech)
        return self._imaging.get((mod, part, tech))

    def price(self, item_code: str, province: str) -> Decimal | None:
        """Indicative price in CNY: the province's override from prices.csv, else items.csv's price."""
        prov = province_of(province)[:2]
        if (item_code, prov) in self._prices:
            return self._prices[(item_code, prov)]
        item = self.items.get(item_code)
        return item.price_cny if item is not None else None

    # -- institutions -------------------------------------------------------------------------

    def institution(self, institution_id: str) -> Institution:
        """The institution with this id; KeyError naming the id and the data directory otherwise."""
        try:
            return self.institutions[institution_id]
        except KeyError:
            raise KeyError(f"unknown institution {institution_id!r} in code data {self.root}") from None

    def region_ids(self, inst: Institution, item: Item | None = None) -> tuple[str, ...]:
        """Regions the institution belongs to (for ``item`` if given: lab-only members count for lab items only)."""
        return tuple(r.id for r in self.regions.values() if r.includes(inst.province, item))

    def alliance_members(self, alliance_id: str) -> tuple[Institution, ...]:
        """Institutions that list ``alliance_id``."""
        return tuple(i for i in self.institutions.values() if alliance_id in i.alliances)

    # -- catalogues ---------------------------------------------------------------------------

    def catalogues_in_force(self, at: datetime) -> list[Catalogue]:
        """Catalogue versions with effective_from <= at < effective_to (one per id; validation
        rejects overlapping versions). A naive ``at`` is taken as Asia/Shanghai time."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=BEIJING)
        return [c for c in self.catalogues if c.in_force(at)]

    def catalogue_versions(self, catalogue_id: str) -> list[Catalogue]:
        """All versions of one catalogue id, oldest first."""
        return [c for c in self.catalogues if c.id == catalogue_id]

    def applicable_catalogues(self, inst: Institution, at: datetime, item: Item | None = None) -> list[Catalogue]:
        """Catalogues in force at ``at`` whose scope covers ``inst`` (and contain ``item`` if given)."""
        found = [c for c in self.catalogues_in_force(at) if c.covers(inst, self, item)]
        if item is not None:
            found = [c for c in found if c.item(item.code) is not None]
        return found

    # -- mappings -----------------------------------------------------------------------------

    def mapping_version(self, institution_id: str) -> str | None:
        """Version label of the institution's mapping table in use (the highest), or None."""
        tables = self._mappings.get(institution_id)
        return tables[-1].version if tables else None

    def mapping_table(self, institution_id: str, version: str | None = None) -> MappingTable | None:
        """One version of an institution's mapping table (default: the highest)."""
        tables = self._mappings.get(institution_id, ())
        if version is None:
            return tables[-1] if tables else None
        return next((t for t in tables if t.version == version), None)

    def _candidate_keys(self, code: str, system: str | None, qualifier: str) -> list[tuple[str, str, str]]:
        """The (system, code, qualifier) keys a sent code may match, best first."""
        is_loinc = is_loinc_system(system)
        sys_key = "LN" if is_loinc else "local"
        candidates = [(sys_key, code, qualifier)] + ([(sys_key, code, "")] if qualifier else [])
        if not is_loinc and system not in (None, "local"):
            # A hospital may tag its own codes with its own system name (HL7 "99LIS"): accept
            # rows declared under that system first, then plain local rows.
            candidates = [(system.strip(), code, qualifier), (system.strip(), code, "")] + candidates
        return candidates

    def qualified_items(self, institution_id: str, code: str, system: str | None = None,
                        version: str | None = None) -> tuple[str, ...]:
        """The unified items a local code maps to under some qualifier (sorted): when a code sent without
        the qualifier that tells them apart names several items, which one is meant cannot be known."""
        table = self.mapping_table(institution_id, version)
        if table is None or not code:
            return ()
        systems = {key[0] for key in self._candidate_keys(code.strip(), system, "")}
        return tuple(sorted({row.unified_code for (sys_key, local, qual), row in table.rows.items()
                             if qual and local == code.strip() and sys_key in systems}))

    def map_code(self, institution_id: str, code: str, system: str | None = None,
                 qualifier: str | None = None, version: str | None = None) -> Mapping | None:
        """Map an incoming code to a unified item.

        Local systems (None, "local" or any non-LOINC system): the institution's table, row with the
        given qualifier first, then the row without qualifier. LOINC ("http://loinc.org", "LN"): the
        institution's LOINC-keyed rows win (they can carry a unit conversion); otherwise the items'
        LOINC column with factor 1. Returns None when unmapped.
        """
        if not code:
            return None
        code = code.strip()
        qual = (qualifier or "").strip()
        is_loinc = is_loinc_system(system)
        table = self.mapping_table(institution_id, version)
        if table is not None:
            for key in self._candidate_keys(code, system, qual):
                row = table.rows.get(key)
                if row is not None:
                    item = self.items[row.unified_code]
                    return Mapping(row.unified_code, row.factor, row.offset, row.source_unit or item.unit,
                                   item.unit, table.version, row.qualifier or None)
        if is_loinc:
            item = self.item_by_loinc(code)
            if item is not None:
                return Mapping(item.code, 1.0, 0.0, item.unit, item.unit, LOINC_TABLE_VERSION, None)
        return None


    # -- imaging mappings ---------------------------------------------------------------------

    def imaging_mapping_version(self, institution_id: str) -> str | None:
        """Version label of the institution's imaging mapping table in use (the highest), or None."""
        tables = self._imaging_mappings.get(institution_id)
        return tables[-1].version if tables else None

    def imaging_mapping_table(self, institution_id: str, version: str | None = None) -> ImagingMappingTable | None:
        """One version of an institution's imaging mapping table (default: the highest)."""
        tables = self._imaging_mappings.get(institution_id, ())
        if version is None:
            return tables[-1] if tables else None
        return next((t for t in tables if t.version == version), None)

    def map_study(self, institution_id: str, procedure_codes: Sequence[tuple[str, str | None]], *,
                  modality: str | None, body_part: str | None, technique: str | None,
                  study_description: str | None = None, requested_procedure: str | None = None,
                  version: str | None = None) -> ImagingMapping | None:
        """Map a study through the institution's imaging mapping table.

        Tried in order: each procedure code (a row under its coding scheme, then a row without one); the
        RequestedProcedureDescription, then the StudyDescription (a row for the study's Modality, then one for
        any Modality; compared by :func:`codes.loader.description_key`); the study shape (Modality,
        BodyPartExamined — empty when the study names none — and technique, ``plain`` when not given).
        None when the institution has no table or nothing matches.
        """
        table = self.imaging_mapping_table(institution_id, version)
        if table is None:
            return None
        mod = (modality or "").strip().upper()
        keys: list[tuple[str, ...]] = []
        for code, scheme in procedure_codes:
            keys += [("procedure_code", (scheme or "").strip(), code.strip()), ("procedure_code", "", code.strip())]
        for kind, text in (("requested_procedure", requested_procedure), ("study_description", study_description)):
            if text and (norm := description_key(text)):
                keys += [(kind, norm, mod), (kind, norm, "")]
        keys.append(("shape", mod, (body_part or "").strip().upper(), (technique or "plain").strip().lower()))
        for key in keys:
            row = table.rows.get(key)
            if row is not None:
                return ImagingMapping(row.unified_code, table.version, row.kind)
        return None


def load_codebook(path: str | os.PathLike[str] | None = None) -> CodeBook:
    """Load and validate a code data directory.

    ``path`` None means ``$HRX_CODES_DIR`` or the shipped ``codes/data``. Raises
    :class:`~codes.model.CodeError` listing every problem (file:line) when the data is invalid.
    """
    root = Path(path) if path is not None else default_codes_dir()
    data, problems = load_dir(root)
    if problems:
        raise CodeError(problems)
    own = root / REASON_CODES_FILE
    borrowed = {REASON_CODES_FILE: data.reason_codes_file} if data.reason_codes_file not in (None, own) else None
    return CodeBook(data, data_digest(root, borrowed))

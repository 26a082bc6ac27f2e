"""Adding a row to an institution's mapping table (lab codes, or studies for an exam item): a new table
version, never an edit in place.

codes/README.md, "mappings/<institution_id>/<version>.csv": each file is a complete table, versions sort
naturally and the highest applies, older ones stay for audit and re-processing. So a new mapping is the
institution's current table with the row appended, written as the next version (``v1`` → ``v2``; ``v1.csv``
when the institution had none). The new file is checked by the loader's own rules
(:func:`codes.loader.load_mapping_table`) before it is put in place, and the whole directory must still load
afterwards; otherwise nothing is left behind.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from codes.book import SHIPPED_READ_ONLY, CodeBook, is_shipped, load_codebook
from codes.loader import load_dir, load_imaging_mapping_table, load_mapping_table, version_key
from codes.loinc import is_loinc_system
from codes.model import CodeError, Problem

#: The column order of a table written from scratch (the shipped tables' order).
COLUMNS = ("system", "local_code", "qualifier", "local_name", "unified_code", "source_unit", "factor", "offset",
           "note")
IMAGING_COLUMNS = ("system", "procedure_code", "requested_procedure", "study_description", "modality", "body_part",
                   "technique", "unified_code", "local_name", "note")


class MappingRefused(Exception):
    """A row that cannot be added: ``field`` at fault, ``conflict`` when it duplicates a row of the table."""

    def __init__(self, field: str | None, message: str, *, conflict: bool = False) -> None:
        super().__init__(message)
        self.field, self.message, self.conflict = field, message, conflict


@dataclass(frozen=True)
class NewRow:
    """One mapping row as an operator enters it (columns of the mapping table, codes/README.md)."""

    local_code: str
    unified_code: str
    system: str | None = None  # None / "local": the hospital's own codes; a LOINC system becomes "LN"
    qualifier: str | None = None
    local_name: str | None = None
    source_unit: str | None = None
    factor: float | None = None
    offset: float | None = None
    note: str | None = None

    def cells(self) -> dict[str, str]:
        system = (self.system or "").strip()
        system = "LN" if system and is_loinc_system(system) else ("" if system == "local" else system)
        number = (lambda x: "" if x is None else repr(float(x)).removesuffix(".0") if float(x).is_integer()
                  else repr(float(x)))
        return {"system": system, "local_code": self.local_code.strip(), "qualifier": (self.qualifier or "").strip(),
                "local_name": (self.local_name or "").strip(), "unified_code": self.unified_code.strip(),
                "source_unit": (self.source_unit or "").strip(), "factor": number(self.factor),
                "offset": number(self.offset), "note": (self.note or "").strip()}


@dataclass(frozen=True)
class AddedMapping:
    institution: str
    version: str
    previous_version: str | None
    path: Path
    book: CodeBook  # the directory loaded again with the new version in force


def next_version(current: str | None) -> str:
    """The version label after ``current`` in natural order: the last number counted up (``v9`` → ``v10``,
    ``2024-07`` → ``2024-08``), else ``-2`` appended; ``v1`` for an institution without a table."""
    if current is None:
        return "v1"
    numbers = list(re.finditer(r"\d+", current))
    if numbers:
        last = numbers[-1]
        candidate = f"{current[:last.start()]}{int(last.group()) + 1:0{len(last.group())}d}{current[last.end():]}"
    else:
        candidate = f"{current}-2"
    assert version_key(candidate) > version_key(current)
    return candidate


def add_mapping(book: CodeBook, institution: str, row: NewRow) -> AddedMapping:
    """Write ``row`` as a new version of ``institution``'s lab mapping table (an exam item: its imaging mapping
    table) in ``book.root`` and return the directory loaded again. Raises :class:`MappingRefused` (nothing
    written) for an unknown institution or item, a row the loader refuses, a row whose (system, local code, qualifier) the table already maps,
    or a code data directory that is the shipped demo data."""
    root = Path(book.root)
    if is_shipped(root):
        raise MappingRefused(None, SHIPPED_READ_ONLY, conflict=True)
    if institution not in book.institutions:
        raise MappingRefused("institution", f"unknown institution {institution!r}")
    cells = row.cells()
    for name, value in cells.items():
        if "\n" in value or "\r" in value:
            raise MappingRefused(name, "must be one line")
    if not cells["local_code"]:
        raise MappingRefused("local_code", "must not be empty")
    item = book.items.get(cells["unified_code"])
    if item is None:
        raise MappingRefused("unified_code", f"unknown unified item {cells['unified_code']!r}")
    if item.is_lab:
        current = book.mapping_table(institution)
        key = (cells["system"] or "local", cells["local_code"], cells["qualifier"])
        existing = current.rows.get(key) if current is not None else None
        described = f"{key[1]!r}{' qualifier ' + repr(key[2]) if key[2] else ''}"
        folder, columns, load = root / "mappings" / institution, COLUMNS, load_mapping_table
    else:
        cells = _study_cells(row, cells)
        current = book.imaging_mapping_table(institution)
        key = (("procedure_code", cells["system"], cells["procedure_code"]) if cells["procedure_code"] else
               ("shape", cells["modality"], cells["body_part"], cells["technique"]))
        existing = current.rows.get(key) if current is not None else None
        described = f"{row.local_code.strip()!r}"
        folder, columns, load = root / "imaging_mappings" / institution, IMAGING_COLUMNS, load_imaging_mapping_table
    if current is not None and existing is not None:
        raise MappingRefused("local_code", f"{institution} table {current.version} already maps {described} to "
                             f"{existing.unified_code} (line {existing.line})", conflict=True)
    version = next_version(current.version if current else None)
    text = _with_row(Path(current.source).read_text("utf-8-sig") if current else "", cells, columns)
    data, _ = load_dir(root)
    problems: list[Problem] = []
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{version}.csv.staged"
    staged.write_text(text, "utf-8")
    try:
        load(staged, institution, data, problems)
        if problems:  # the table loaded before, so what the loader finds now is the new row's
            raise MappingRefused(_field_of(problems[0]), "; ".join(p.message for p in problems))
        target = folder / f"{version}.csv"
        with open(staged, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(staged, target)  # fails if another writer took this version meanwhile
        except FileExistsError:
            raise MappingRefused(None, f"{institution} table {version} was written meanwhile; try again",
                                 conflict=True) from None
    finally:
        staged.unlink(missing_ok=True)
    fsync_dir(folder)
    try:
        loaded = load_codebook(root)
    except CodeError as exc:
        target.unlink(missing_ok=True)
        raise MappingRefused(None, "the code directory does not load with this row: "
                                   + "; ".join(str(p) for p in exc.problems[:5])) from None
    return AddedMapping(institution, version, current.version if current else None, target, loaded)


def _study_cells(row: NewRow, lab: dict[str, str]) -> dict[str, str]:
    """The imaging table row for a study as the unmapped queue shows it: a procedure code under its scheme, or
    (``local_system`` ``dicom``) the study's shape ``MODALITY/BODYPART/technique``, ``-`` where it named none
    (codes.mapping.imaging_item)."""
    for name in ("qualifier", "source_unit", "factor", "offset"):
        if lab[name]:
            raise MappingRefused(name, "a study mapping takes no " + name)
    cells = {"system": "", "procedure_code": "", "modality": "", "body_part": "", "technique": "",
             "unified_code": lab["unified_code"], "local_name": lab["local_name"], "note": lab["note"]}
    code = row.local_code.strip()
    if (row.system or "").strip() == "dicom":
        parts = code.split("/")
        if len(parts) != 3 or parts[0] in ("", "-"):
            raise MappingRefused("local_code", f"a study shape is MODALITY/BODYPART/technique, not {code!r}")
        modality, body_part, technique = ("" if p == "-" else p for p in parts)
        cells.update(modality=modality.upper(), body_part=body_part.upper(), technique=(technique or "plain").lower())
    else:
        cells.update(system=(row.system or "").strip(), procedure_code=code)
    return cells


def _with_row(text: str, cells: dict[str, str], default_columns: tuple[str, ...]) -> str:
    """``text`` (a whole table, or nothing) with one row appended in the table's own column order."""
    header = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), None)
    columns = [h.strip() for h in next(csv.reader([header]))] if header else list(default_columns)
    missing = [c for c, v in cells.items() if v and c not in columns]
    if missing:
        raise MappingRefused(missing[0], f"the current table has no {missing[0]} column; add it to the table first")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if not header:
        writer.writerow(columns)
    writer.writerow([cells.get(c, "") for c in columns])
    return (text if not text or text.endswith("\n") else text + "\n") + out.getvalue()


def _field_of(problem: Problem) -> str | None:
    message = problem.message
    for name in ("unified_code", "source_unit", "factor", "offset", "local_code", "system", "qualifier"):
        if name in message:
            return name
    return None


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

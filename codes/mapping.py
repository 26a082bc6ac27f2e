"""Mapping what a hospital sent onto the unified items: codes, units, a report's own item, imaging items.

The functions here work on plain data — the codes and values as sent, and the code book — and return the
``item`` and observation objects of ``hr.lab-result.v1`` / ``hr.imaging-result.v1``. They neither
pseudonymize nor build events, so ingest (``adapters.pipeline``) and the re-evaluation of stored results after
a mapping table changed (``exchange.remap``) run the same mapping.

Rules (``codes/README.md``, "mappings"): a code's alternatives are tried in order and the first that maps
wins; the sender's code system reaches :meth:`CodeBook.map_code` unchanged, which decides what is LOINC
(:func:`codes.loinc.is_loinc_system`) and finds rows declared under a hospital's own system. An unmapped code
is kept with the reason, never dropped.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from codes.book import CodeBook
from codes.model import Mapping


class SentCode(Protocol):
    """A code as the source sent it (``adapters.report.Code`` is one); ``system`` None is the hospital's table."""

    @property
    def code(self) -> str: ...
    @property
    def system(self) -> str | None: ...
    @property
    def display(self) -> str | None: ...
    @property
    def qualifier(self) -> str | None: ...


class SentValue(Protocol):
    """A result value as the source sent it (``adapters.report.Value`` is one), before any unit conversion."""

    @property
    def kind(self) -> str: ...  # quantity | text | coded | none
    @property
    def number(self) -> float | None: ...
    @property
    def comparator(self) -> str | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def ref_low(self) -> float | None: ...
    @property
    def ref_high(self) -> float | None: ...
    @property
    def ref_text(self) -> str | None: ...
    @property
    def interpretation(self) -> str | None: ...
    @property
    def date(self) -> str | None: ...


class SentStudy(Protocol):
    """The shape of an imaging study (``adapters.report.Study`` is one): DICOM Modality, BodyPartExamined,
    the technique and the study description."""

    @property
    def modality(self) -> str: ...
    @property
    def body_part(self) -> str | None: ...
    @property
    def technique(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...


class NoCode(ValueError):
    """Nothing to map: a report or an observation came without any code."""


def map_code(book: CodeBook, institution: str, codes: Sequence[SentCode]) -> tuple[dict[str, Any], Mapping | None]:
    """The event's coded item and the mapping found (None when unmapped, the code is then kept as sent).

    Alternatives are tried in order and the first one that maps wins; each goes to
    :meth:`CodeBook.map_code` with its system as sent. Raises :class:`NoCode` when ``codes`` is empty.
    """
    if not codes:
        raise NoCode("no code given")
    code, mapping = codes[0], None
    for candidate in codes:
        mapping = book.map_code(institution, candidate.code, candidate.system, candidate.qualifier)
        if mapping is not None:
            code = candidate
            break
    # The institution's table version in force is recorded even when nothing mapped: when the table
    # changes, results stored under an older version are re-evaluated (exchange/remap.py).
    item = {"unified_code": mapping.unified_code if mapping else None, "local_code": code.code,
            "local_system": code.system, "local_name": code.display,
            "mapping_version": book.mapping_version(institution),
            "mapping_issue": None if mapping else "no mapping for this local code"}
    return item, mapping


def map_observation(book: CodeBook, institution: str, seq: int, codes: Sequence[SentCode],
                    value: SentValue) -> dict[str, Any]:
    """One observation object: its mapped item and its value, converted to the item's unit where the mapping
    says how (:func:`convert_units`)."""
    item, mapping = map_code(book, institution, codes)
    has_range = value.ref_low is not None or value.ref_high is not None or bool(value.ref_text)
    observation: dict[str, Any] = {
        "seq": seq, "item": item, "value_type": value.kind, "value": value.number, "comparator": value.comparator,
        "value_text": value.text, "unit": value.unit, "original": None,
        "reference_range": ({"low": value.ref_low, "high": value.ref_high, "text": value.ref_text}
                            if has_range else None),
        "interpretation": value.interpretation,
    }
    if value.date is not None:  # optional in the schema: events without a date value are unchanged
        observation["value_date"] = value.date
    if mapping is not None and value.kind == "quantity":
        convert_units(observation, mapping)
    return observation


def convert_units(observation: dict[str, Any], mapping: Mapping) -> None:
    """Apply the mapping's conversion (``unified = value * factor + offset``) when the hospital reports the
    mapping's source unit; the value, unit and reference range as sent are kept under ``original``.

    A unit that is neither the source nor the target unit cannot be trusted: the value is kept as sent and
    the observation becomes unmapped (viewable, never recognizable) with the reason.
    """
    unit = observation["unit"]
    target = mapping.target_unit
    if target is None or unit == target:
        return
    if mapping.source_unit is not None and unit == mapping.source_unit:
        ref = observation["reference_range"]
        observation["original"] = {"value": observation["value"], "unit": unit,
                                   "reference_range": dict(ref) if ref else None}
        if observation["value"] is not None:
            observation["value"] = round(mapping.convert(observation["value"]), 6)
        if ref:
            for bound in ("low", "high"):
                if ref[bound] is not None:
                    ref[bound] = round(mapping.convert(ref[bound]), 6)
        observation["unit"] = target
        return
    observation["item"]["mapping_issue"] = (f"unit {unit!r} is neither the mapped unit {target!r} nor a "
                                            f"convertible source unit {mapping.source_unit!r}")
    observation["item"]["unified_code"] = None


def infer_report_item(item: dict[str, Any], observations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's item, or — when its own code is unmapped and it holds exactly one observation, which is
    mapped — that observation's item: such a report is that item's result."""
    if item["unified_code"] is not None or len(observations) != 1:
        return item
    mapped = observations[0]["item"]["unified_code"]
    if mapped is None:
        return item
    return {**item, "unified_code": mapped, "mapping_issue": None}


def imaging_item(book: CodeBook, institution: str, codes: Sequence[SentCode], study: SentStudy) -> dict[str, Any]:
    """The unified imaging item of a study: its procedure codes through the institution's table first, then
    the study's shape (Modality + BodyPartExamined + technique) through the items' DICOM columns
    (:meth:`CodeBook.imaging_item`, no guessing across body parts)."""
    if codes:
        item, mapping = map_code(book, institution, codes)
        if mapping is not None:
            return item
    found = book.imaging_item(study.modality, study.body_part, study.technique)
    first = codes[0] if codes else None
    local = first.code if first else "/".join(p or "-" for p in (study.modality, study.body_part, study.technique))
    return {"unified_code": found.code if found else None, "local_code": local[:64],
            "local_system": first.system if first else "dicom", "local_name": study.description,
            "mapping_version": None,
            "mapping_issue": None if found else "no unified imaging item for this procedure / study shape"}

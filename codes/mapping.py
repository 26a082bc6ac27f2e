"""Mapping what a hospital sent onto the unified items: codes, units, a report's own item, imaging items.

The functions here work on plain data — the codes and values as sent, and the code book — and return the
``item`` and observation objects of ``hr.lab-result.v1`` / ``hr.imaging-result.v1``. They neither
pseudonymize nor build events, so ingest (``adapters.pipeline``) and the re-evaluation of stored results after
a mapping table changed (``exchange.remap``) run the same mapping.

Rules (``codes/README.md``, "mappings"): a code's alternatives are tried in order and the first that maps
wins; the sender's code system reaches :meth:`CodeBook.map_code` unchanged, which decides what is LOINC
(:func:`codes.loinc.is_loinc_system`) and finds rows declared under a hospital's own system. An unmapped code
is kept with the reason (:mod:`codes.issues`: a code and a message in Chinese and English), never dropped.

Units (:mod:`codes.units`): a value in the item's unit, however spelled, is kept; a unit that becomes the
mapping's source unit or the item's unit by a pure scale factor (``mg/dL`` → ``g/L``) converts; a conversion
between mass and substance (``mg/dL`` → ``mmol/L``) needs the analyte's molar mass, so only a mapping row's
``factor`` makes it. Anything else leaves the value as sent and the observation unmapped.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from codes import units
from codes.book import CodeBook
from codes.issues import NO_ISSUE, issue
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
    the technique and the study description; a ``requested_procedure`` attribute (the
    RequestedProcedureDescription), when the study has one, is used too."""

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
    :meth:`CodeBook.map_code` with its system as sent. When none maps, the item keeps the first code sent —
    or the first that names several items by qualifier (``ambiguous``) — and says why. Raises
    :class:`NoCode` when ``codes`` is empty.
    """
    if not codes:
        raise NoCode("no code given")
    for candidate in codes:
        mapping = book.map_code(institution, candidate.code, candidate.system, candidate.qualifier)
        if mapping is not None:
            return _coded(book, institution, candidate, mapping.unified_code, NO_ISSUE), mapping
    for candidate in codes:
        if len(items := book.qualified_items(institution, candidate.code, candidate.system)) > 1:
            return _coded(book, institution, candidate, None,
                          issue("qualifier_needed", code=candidate.code, items="、".join(items))), None
    return _coded(book, institution, codes[0], None, issue("local_code_unknown", code=codes[0].code)), None


def _coded(book: CodeBook, institution: str, code: SentCode, unified: str | None,
           why: dict[str, Any]) -> dict[str, Any]:
    # The institution's table version in force is recorded even when nothing mapped: when the table
    # changes, results stored under an older version are re-evaluated (exchange/remap.py).
    return {"unified_code": unified, "local_code": code.code, "local_system": code.system,
            "local_name": code.display, "mapping_version": book.mapping_version(institution), **why}


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
    """Bring a quantity to the item's unit; the value, unit and reference range as sent are kept under
    ``original`` whenever anything about them changed (even only the unit's spelling).

    In order: the item's unit however spelled (factor 1); the mapping's source unit, reached by a pure scale
    factor from the unit sent, then ``unified = value * factor + offset`` of the mapping; the item's unit
    reached by a pure scale factor. Otherwise the value is kept as sent and the observation becomes unmapped
    (viewable, never recognizable) with the reason ``unit_not_convertible``.
    """
    unit = observation["unit"]
    target = mapping.target_unit
    if target is None or unit == target:
        return
    sent = units.normalize_unit(unit)
    factor: float | None = None
    offset = 0.0
    if sent is not None:
        if sent == units.normalize_unit(target):
            factor = 1.0
        elif (mapping.source_unit is not None and mapping.source_unit != target
              and (scale := units.scale_factor(sent, mapping.source_unit)) is not None):
            factor, offset = scale * mapping.factor, mapping.offset
        else:
            factor = units.scale_factor(sent, target)
    item = observation["item"]
    if factor is None:
        message = "unit_missing" if unit is None or not unit.strip() else "unit_not_convertible_to_item"
        item.update(issue(message, item=mapping.unified_code, unit=unit, target=target))
        item["unified_code"] = None
        return
    ref = observation["reference_range"]
    observation["original"] = {"value": observation["value"], "unit": unit,
                               "reference_range": dict(ref) if ref else None}
    if observation["value"] is not None:
        observation["value"] = round(observation["value"] * factor + offset, 6)
    if ref:
        for bound in ("low", "high"):
            if ref[bound] is not None:
                ref[bound] = round(ref[bound] * factor + offset, 6)
    observation["unit"] = target


def infer_report_item(item: dict[str, Any], observations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's item, or — when its own code is unmapped and it holds exactly one observation, which is
    mapped — that observation's item: such a report is that item's result. An unmapped report whose
    observations map to several items is ``ambiguous``: it is no one item's result."""
    if item["unified_code"] is not None:
        return item
    mapped = sorted({o["item"]["unified_code"] for o in observations if o["item"]["unified_code"] is not None})
    if len(observations) == 1 and mapped:
        return {**item, "unified_code": mapped[0], **NO_ISSUE}
    if len(mapped) > 1:
        return {**item, **issue("report_spans_items", code=item["local_code"], items="、".join(mapped))}
    return item


def imaging_item(book: CodeBook, institution: str, codes: Sequence[SentCode], study: SentStudy) -> dict[str, Any]:
    """The unified imaging item of a study: the institution's imaging mapping table first
    (:meth:`CodeBook.map_study`: procedure codes, requested procedure and study descriptions, study shape),
    then the study's shape through the items' DICOM columns (:meth:`CodeBook.imaging_item`, no guessing
    across body parts). The imaging table's version in force is recorded, mapped or not (re-map)."""
    requested = getattr(study, "requested_procedure", None)
    mapped = book.map_study(institution, [(c.code, c.system) for c in codes], modality=study.modality,
                            body_part=study.body_part, technique=study.technique,
                            study_description=study.description, requested_procedure=requested)
    found = mapped.unified_code if mapped else None
    if found is None and (shaped := book.imaging_item(study.modality, study.body_part, study.technique)):
        found = shaped.code
    first = codes[0] if codes else None
    local = first.code if first else "/".join(p or "-" for p in (study.modality, study.body_part, study.technique))
    return {"unified_code": found, "local_code": local[:64],
            "local_system": first.system if first else "dicom",
            "local_name": study.description,
            "mapping_version": book.imaging_mapping_version(institution),
            **(NO_ISSUE if found else issue("study_unknown"))}

"""A laboratory DiagnosticReport and its Observations → :class:`~adapters.pipeline.LabReport`.

Rules implemented:
- the report's observations are its results with every panel's members (:mod:`.references`); each
  Observation's ``component`` values follow it, so a panel, its members and multi-part values are all kept;
- codes: every coding with a code is an alternative, the hospital's own codes before LOINC (its mapping table
  knows its exact method and unit). A CodeableConcept with only ``text`` (valid FHIR) keeps the text as an
  unmapped local code under :data:`CODE_TEXT_SYSTEM`; the report's unified item is then inferred from its
  results by the pipeline's report-item inference;
- values: Quantity (UCUM code as the unit, else the unit text), integer (a unitless quantity), string,
  CodeableConcept, boolean, Range, Ratio, dateTime, time and Period (as text); an absent value keeps its
  ``dataAbsentReason`` as text. The first reference range and the first interpretation code are kept.
"""
from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from adapters.fhir.identity import ReportIdentity, moment
from adapters.fhir.references import Located, ResourceIndex
from adapters.report import AdapterError, Code, LabObservation, LabReport, Value
from codes.loinc import is_loinc_system

UCUM = "http://unitsofmeasure.org"
#: The system of a "code" that is a CodeableConcept's text: never found in a mapping table by that system.
CODE_TEXT_SYSTEM = "urn:hrx:code-text"
#: The event contract's local code and local name lengths.
CODE_LENGTH, NAME_LENGTH = 64, 256


def concept_codes(concept: Any, where: str) -> list[Code]:
    """The alternatives of a CodeableConcept, local codes first; its text when it has no coded coding."""
    codes = [Code(c.code, c.system, c.display) for c in (concept.coding if concept else None) or () if c.code]
    if codes:
        return sorted(codes, key=lambda c: is_loinc_system(c.system))
    text = (concept.text if concept else None) or next(
        (c.display for c in (concept.coding if concept else None) or () if c.display), None)
    if text and text.strip():
        text = " ".join(text.split())
        return [Code(text[:CODE_LENGTH], CODE_TEXT_SYSTEM, text[:NAME_LENGTH])]
    raise AdapterError("no coding with a code, and no text", f"{where}.code")


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


def _quantity_text(quantity: Any) -> str:
    if quantity is None or quantity.value is None:
        return "?"
    unit = quantity.code if quantity.system == UCUM and quantity.code else quantity.unit
    return f"{quantity.comparator or ''}{quantity.value:g}{' ' + unit if unit else ''}"


def _moment_text(value: Any) -> str | None:
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return str(value) if value is not None else None


def observation_value(obs: Any) -> Value:
    """The value of an Observation (or of one of its components) as the pipeline takes it."""
    ref = (getattr(obs, "referenceRange", None) or [None])[0]
    ref_args = {
        "ref_low": _number(ref.low.value) if ref and ref.low else None,
        "ref_high": _number(ref.high.value) if ref and ref.high else None,
        "ref_text": ref.text if ref else None,
    }
    interp = next((c.code for i in obs.interpretation or () for c in i.coding or () if c.code), None)
    args: dict[str, Any] = {"interpretation": interp, **ref_args}
    if obs.valueQuantity is not None:
        q = obs.valueQuantity
        unit = q.code if q.system == UCUM and q.code else q.unit
        return Value("quantity", _number(q.value), q.comparator, None, unit, **args)
    if obs.valueInteger is not None:
        return Value("quantity", float(obs.valueInteger), **args)
    if obs.valueString is not None:
        return Value("text", text=obs.valueString, **args)
    if obs.valueCodeableConcept is not None:
        cc = obs.valueCodeableConcept
        return Value("coded", text=cc.text or next((c.display or c.code for c in cc.coding or ()), None), **args)
    if obs.valueBoolean is not None:
        return Value("coded", text="true" if obs.valueBoolean else "false", **args)
    if obs.valueRange is not None:
        r = obs.valueRange
        return Value("text", text=f"{_quantity_text(r.low)}–{_quantity_text(r.high)}", **args)
    if obs.valueRatio is not None:
        r = obs.valueRatio
        return Value("text", text=f"{_quantity_text(r.numerator)}/{_quantity_text(r.denominator)}", **args)
    for field in ("valueDateTime", "valueTime"):
        if getattr(obs, field) is not None:
            return Value("text", text=_moment_text(getattr(obs, field)), **args)
    if obs.valuePeriod is not None:
        p = obs.valuePeriod
        return Value("text", text=f"{_moment_text(p.start) or ''}/{_moment_text(p.end) or ''}", **args)
    absent = obs.dataAbsentReason
    if absent is not None:
        reason = absent.text or next((c.display or c.code for c in absent.coding or ()), None)
        return Value("none", text=f"data absent: {reason}" if reason else None, **args)
    return Value("none", **args)


def lab_observations(observation: Located) -> list[LabObservation]:
    """One Observation followed by its components, each with its own code and value."""
    obs, where = observation.resource, observation.location
    found = [LabObservation(concept_codes(obs.code, where), observation_value(obs), where)]
    for k, component in enumerate(obs.component or ()):
        at = f"{where}.component[{k}]"
        found.append(LabObservation(concept_codes(component.code, at), observation_value(component), at))
    return found


def lab_report(report: Located, index: ResourceIndex, identity: ReportIdentity,
               message_id: str | None) -> LabReport:
    """The lab report of one DiagnosticReport; AdapterError naming the element at fault."""
    resource, where = report.resource, report.location
    observations = [lab for o in index.report_observations(report) for lab in lab_observations(o)]
    if not observations:
        raise AdapterError("DiagnosticReport.result lists no Observation", f"{where}.result")
    collected = moment(resource.effectiveDateTime)
    if collected is None and resource.effectivePeriod is not None:
        collected = moment(resource.effectivePeriod.start)
    specimen_type = specimen_id = None
    if resource.specimen:
        specimen = index.find(resource.specimen[0], report)
        if specimen is not None and specimen.kind == "Specimen":
            spec = specimen.resource
            specimen_type = next((c.code for c in (spec.type.coding if spec.type else None) or ()), None)
            specimen_id = spec.accessionIdentifier.value if spec.accessionIdentifier else None
    return LabReport(
        institution=identity.institution, result_id=identity.result_id, version=identity.version,
        status=identity.status, patient=identity.patient, codes=concept_codes(resource.code, where),
        observations=observations, reported_at=identity.reported_at, collected_at=collected,
        specimen_type=specimen_type, specimen_id=specimen_id, message_id=message_id, location=where)

"""FHIR R4 lab results: a Bundle (transaction or collection) of DiagnosticReport + Observations + Patient.

Rules implemented:
- The Bundle is parsed with the R4 models of fhir.resources (``fhir.resources.R4B``: R4-compatible); every
  DiagnosticReport in it must be usable or none is published (all-or-nothing validation).
- Issuer: the DiagnosticReport's performer Organization, identified by its institution id under the
  identifier system :data:`INSTITUTION_SYSTEM` (a contained/bundled Organization or a logical reference).
- Idempotency: issuer + DiagnosticReport.identifier (+ version) is the store's natural key, so a resent
  Bundle creates nothing new.
- Version: ``DiagnosticReport.meta.versionId`` when it is a positive integer; otherwise the status rank
  (preliminary 1, final 2, amended/corrected 3, cancelled/entered-in-error 4). Send ``meta.versionId``
  when a report is corrected more than once.
- Patient: resident ID (居民身份证号) from ``Patient.identifier`` with a system in
  :data:`RESIDENT_ID_SYSTEMS` or type ``NNCHN`` (HL7 v2-0203 national person identifier, China).
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from adapters.pipeline import AdapterError, Code, LabObservation, LabReport, Patient, Value
from codes.loinc import is_loinc_system
from schemas.statuses import STATUS_RANK

INSTITUTION_SYSTEM = "urn:hrx:institution"
#: OID 2.16.156.10011.1.3: 中华人民共和国居民身份证号码 in the Chinese national health data standards.
RESIDENT_ID_SYSTEMS = ("urn:oid:2.16.156.10011.1.3", "urn:hrx:resident-id")
UCUM = "http://unitsofmeasure.org"
_STATUS = {"registered": "preliminary", "partial": "preliminary", "preliminary": "preliminary",
           "final": "final", "amended": "amended", "corrected": "corrected", "appended": "amended",
           "cancelled": "cancelled", "entered-in-error": "entered-in-error"}


def parse_bundle(data: Any) -> list[LabReport]:
    """Parse a Bundle (as decoded JSON) into lab reports; raise AdapterError naming the offending element."""
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise AdapterError("expected a FHIR Bundle resource", "Bundle", code="structure")
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "Bundle." + ".".join(str(p) for p in first["loc"])
        raise AdapterError(f"{first['msg']} ({len(exc.errors())} problem(s) in all)", where,
                           code="structure") from None
    except Exception as exc:  # noqa: BLE001 - validating decoded JSON has no effect to undo: any failure refuses
        # Some of fhir.resources' own validators fail on malformed input with an error pydantic does not
        # collect: a nested resourceType R4 does not define (KeyError) or that is not a string (TypeError), a
        # primitive's "_element" that is not an object (AttributeError).
        raise AdapterError(f"the Bundle has an element fhir.resources cannot read ({type(exc).__name__}): an "
                           "unknown resourceType, or an element of the wrong JSON type", "Bundle",
                           code="structure") from None
    if bundle.type not in ("transaction", "collection"):
        raise AdapterError(f"Bundle.type {bundle.type!r} is not accepted: send a transaction or collection",
                           "Bundle.type")
    index: dict[str, tuple[Any, str]] = {}
    for i, entry in enumerate(bundle.entry or ()):
        resource = entry.resource
        if resource is None:
            continue
        where = f"Bundle.entry[{i}].resource"
        if entry.fullUrl:
            index[entry.fullUrl] = (resource, where)
        if resource.id:
            index[f"{resource.get_resource_type()}/{resource.id}"] = (resource, where)
    reports = [(r, w) for r, w in index.values() if r.get_resource_type() == "DiagnosticReport"]
    seen: set[int] = set()
    unique = [(r, w) for r, w in reports if not (id(r) in seen or seen.add(id(r)))]  # type: ignore[func-returns-value]
    if not unique:
        raise AdapterError("the Bundle holds no DiagnosticReport", "Bundle.entry")
    bundle_id = bundle.identifier.value if bundle.identifier else None
    return [_report(r, w, index, bundle_id) for r, w in unique]


def _resolve(reference: Any, index: dict[str, tuple[Any, str]], where: str, kind: str) -> tuple[Any, str]:
    ref = getattr(reference, "reference", None)
    if not ref or ref not in index:
        raise AdapterError(f"reference {ref!r} does not resolve to a {kind} inside the Bundle", where)
    resource, location = index[ref]
    if resource.get_resource_type() != kind:
        raise AdapterError(f"reference {ref!r} points at a {resource.get_resource_type()}, not a {kind}", where)
    return resource, location


def _institution(report: Any, index: dict[str, tuple[Any, str]], where: str) -> str:
    for i, performer in enumerate(report.performer or ()):
        ident = performer.identifier
        if ident is not None and ident.system == INSTITUTION_SYSTEM and ident.value:
            return ident.value
        if performer.reference and performer.reference in index:
            org, org_where = _resolve(performer, index, f"{where}.performer[{i}]", "Organization")
            for ident in org.identifier or ():
                if ident.system == INSTITUTION_SYSTEM and ident.value:
                    return ident.value
            raise AdapterError(f"Organization has no identifier with system {INSTITUTION_SYSTEM}",
                               f"{org_where}.identifier")
    raise AdapterError(f"no performer Organization identified under {INSTITUTION_SYSTEM}", f"{where}.performer")


def _patient(report: Any, index: dict[str, tuple[Any, str]], where: str) -> Patient:
    patient, p_where = _resolve(report.subject, index, f"{where}.subject", "Patient")
    for i, ident in enumerate(patient.identifier or ()):
        typed = any(c.code == "NNCHN" for c in (ident.type.coding if ident.type else None) or ())
        if (ident.system in RESIDENT_ID_SYSTEMS or typed) and ident.value:
            birth = patient.birthDate
            return Patient(resident_id=ident.value, sex=patient.gender,
                           birth_year=birth.year if isinstance(birth, date) else None,
                           location=f"{p_where}.identifier[{i}]")
    raise AdapterError("Patient carries no resident ID (system urn:oid:2.16.156.10011.1.3 or type NNCHN)",
                       f"{p_where}.identifier")


def _codes(concept: Any, where: str) -> list[Code]:
    codes = [Code(c.code, c.system, c.display) for c in (concept.coding if concept else None) or () if c.code]
    if not codes:
        raise AdapterError("no coding with a code", f"{where}.code")
    # A hospital's own code first: its mapping table knows its exact method and unit.
    return sorted(codes, key=lambda c: is_loinc_system(c.system))


def _value(obs: Any) -> Value:
    ref = (obs.referenceRange or [None])[0]
    ref_args = {
        "ref_low": float(ref.low.value) if ref and ref.low and ref.low.value is not None else None,
        "ref_high": float(ref.high.value) if ref and ref.high and ref.high.value is not None else None,
        "ref_text": ref.text if ref else None,
    }
    interp = next((c.code for i in obs.interpretation or () for c in i.coding or () if c.code), None)
    if obs.valueQuantity is not None:
        q = obs.valueQuantity
        unit = q.code if q.system == UCUM and q.code else q.unit
        return Value("quantity", float(q.value) if q.value is not None else None, q.comparator, None, unit,
                     interpretation=interp, **ref_args)
    if obs.valueString is not None:
        return Value("text", text=obs.valueString, interpretation=interp, **ref_args)
    if obs.valueCodeableConcept is not None:
        cc = obs.valueCodeableConcept
        text = cc.text or next((c.display or c.code for c in cc.coding or ()), None)
        return Value("coded", text=text, interpretation=interp, **ref_args)
    return Value("none", interpretation=interp, **ref_args)


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return None


def _report(report: Any, where: str, index: dict[str, tuple[Any, str]], bundle_id: str | None) -> LabReport:
    identifier = next((i.value for i in report.identifier or () if i.value), None)
    if not identifier:
        raise AdapterError("DiagnosticReport.identifier is required (it is the idempotency key)",
                           f"{where}.identifier")
    status = _STATUS.get(report.status or "")
    if status is None:
        raise AdapterError(f"status {report.status!r} is not a DiagnosticReport status", f"{where}.status")
    version_id = report.meta.versionId if report.meta else None
    version = int(version_id) if version_id and str(version_id).isdigit() and int(version_id) > 0 else STATUS_RANK[status]
    reported = _moment(report.issued)
    if reported is None:
        raise AdapterError("DiagnosticReport.issued (with a time zone) is required", f"{where}.issued")
    observations: list[LabObservation] = []
    for i, ref in enumerate(report.result or ()):
        obs, o_where = _resolve(ref, index, f"{where}.result[{i}]", "Observation")
        observations.append(LabObservation(_codes(obs.code, o_where), _value(obs), o_where))
    if not observations:
        raise AdapterError("DiagnosticReport.result lists no Observation", f"{where}.result")
    effective = _moment(report.effectiveDateTime)
    specimen_type = specimen_id = None
    if report.specimen:
        ref = report.specimen[0].reference
        if ref and ref in index:
            spec = index[ref][0]
            specimen_type = next((c.code for c in (spec.type.coding if spec.type else None) or ()), None)
            specimen_id = spec.accessionIdentifier.value if spec.accessionIdentifier else None
    return LabReport(
        institution=_institution(report, index, where), result_id=identifier, version=version, status=status,
        patient=_patient(report, index, where), codes=_codes(report.code, where), observations=observations,
        reported_at=reported, collected_at=effective, specimen_type=specimen_type, specimen_id=specimen_id,
        message_id=bundle_id, location=where)


def bundle_events(pipeline: Any, data: Any) -> list[dict[str, Any]]:
    """Every event of one Bundle, validated — or an AdapterError and no event at all."""
    return [pipeline.lab_event(r, "fhir") for r in parse_bundle(data)]


def operation_outcome(error: AdapterError) -> dict[str, Any]:
    """The FHIR OperationOutcome that explains a refused Bundle."""
    issue: dict[str, Any] = {"severity": "error", "code": error.code, "diagnostics": error.message}
    if error.location:
        issue["expression"] = [error.location]
    return {"resourceType": "OperationOutcome", "issue": [issue]}



"""Who issued a DiagnosticReport, about whom, and which version of which report it is.

Rules implemented (docs/rules.md, "Statuses and versions", "Delivery", "Privacy"):

- Issuer: the report's performer Organization (the first one among the performers), identified by its
  institution id under the identifier system :data:`INSTITUTION_SYSTEM` (a bundled or contained
  Organization, or a logical reference).
- Result id: the first ``DiagnosticReport.identifier`` with a value, keyed on system *and* value
  (:func:`result_id`), so two reports whose numbers differ only by system stay two results.
- Version: ``meta.versionId`` when it is a positive integer (up to :data:`MAX_VERSION`, the store's integer);
  otherwise the status rank, and the report says so (``version_explicit``) because the door refuses a rank
  that would hide under a higher stored version.
- Status: DiagnosticReport.status onto the six statuses of the event contract; ``registered`` and
  ``partial`` are preliminary, ``appended`` is amended.
- Patient: the resident ID (居民身份证号) from ``Patient.identifier`` with a system in
  :data:`RESIDENT_ID_SYSTEMS` or type ``NNCHN`` (HL7 v2-0203 national person identifier, China).
- ``issued`` with a time zone is required: it is the report time every validity window starts from.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from adapters.fhir.references import Located, ResourceIndex
from adapters.report import AdapterError, Patient
from schemas.statuses import STATUS_RANK

INSTITUTION_SYSTEM = "urn:hrx:institution"
#: OID 2.16.156.10011.1.3: 中华人民共和国居民身份证号码 in the Chinese national health data standards.
RESIDENT_ID_SYSTEMS = ("urn:oid:2.16.156.10011.1.3", "urn:hrx:resident-id")
#: ``urn:hrx:report-id:<institution>``: the issuer's own report numbers, the same key a bare number has.
REPORT_NUMBER_SYSTEM = "urn:hrx:report-id:"
#: The store's ``results.result_id`` column and the event contract's ``result_id`` length.
RESULT_ID_LENGTH = 128
#: The store keeps versions in a 32-bit integer column.
MAX_VERSION = 2**31 - 1
STATUS_OF = {"registered": "preliminary", "partial": "preliminary", "preliminary": "preliminary",
             "final": "final", "amended": "amended", "corrected": "corrected", "appended": "amended",
             "cancelled": "cancelled", "entered-in-error": "entered-in-error"}


@dataclass(frozen=True)
class ReportIdentity:
    """What every result event of a DiagnosticReport starts with, whatever its kind."""

    institution: str
    result_id: str
    version: int
    version_explicit: bool
    status: str
    patient: Patient
    reported_at: datetime


def result_id(system: str | None, value: str, institution: str) -> str:
    """The store's result id for ``DiagnosticReport.identifier`` (system, value) of ``institution``.

    - no system, or the issuer's own report-number system ``urn:hrx:report-id:<institution>``: the value;
    - any other system: ``system|value`` (the FHIR token form);
    - longer than :data:`RESULT_ID_LENGTH` characters: ``sha256:`` and the SHA-256 of that text in hex.
    """
    text = value if not system or system == f"{REPORT_NUMBER_SYSTEM}{institution}" else f"{system}|{value}"
    if len(text) <= RESULT_ID_LENGTH:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def moment(value: Any) -> datetime | None:
    """A FHIR dateTime/instant that carries a time; a bare date is not a moment."""
    return value if isinstance(value, datetime) else None


def report_identity(report: Located, index: ResourceIndex) -> ReportIdentity:
    """The identity of one DiagnosticReport; AdapterError naming the element at fault."""
    resource, where = report.resource, report.location
    identifier = next((i for i in resource.identifier or () if i.value), None)
    if identifier is None:
        raise AdapterError("DiagnosticReport.identifier is required (it is the idempotency key)",
                           f"{where}.identifier")
    status = STATUS_OF.get(resource.status or "")
    if status is None:
        raise AdapterError(f"status {resource.status!r} is not a DiagnosticReport status", f"{where}.status")
    version, explicit = _version(resource, status, where)
    reported = moment(resource.issued)
    if reported is None:
        raise AdapterError("DiagnosticReport.issued (with a time zone) is required", f"{where}.issued")
    institution = _institution(report, index)
    return ReportIdentity(institution=institution, result_id=result_id(identifier.system, identifier.value,
                                                                        institution),
                          version=version, version_explicit=explicit, status=status,
                          patient=_patient(report, index), reported_at=reported)


def _version(resource: Any, status: str, where: str) -> tuple[int, bool]:
    version_id = str(resource.meta.versionId) if resource.meta and resource.meta.versionId else ""
    if not (version_id.isdigit() and int(version_id) > 0):
        return STATUS_RANK[status], False
    if int(version_id) > MAX_VERSION:
        raise AdapterError(f"meta.versionId is larger than {MAX_VERSION}", f"{where}.meta.versionId")
    return int(version_id), True


def _institution(report: Located, index: ResourceIndex) -> str:
    where = report.location
    for i, performer in enumerate(report.resource.performer or ()):
        ident = performer.identifier
        if ident is not None and ident.system == INSTITUTION_SYSTEM and ident.value:
            return str(ident.value)
        org = index.find(performer, report)
        # Practitioners, roles and care teams may perform too: the issuer is the Organization among them.
        if org is not None and org.kind == "Organization":
            for ident in org.resource.identifier or ():
                if ident.system == INSTITUTION_SYSTEM and ident.value:
                    return str(ident.value)
            raise AdapterError(f"Organization has no identifier with system {INSTITUTION_SYSTEM}",
                               f"{org.location}.identifier")
    raise AdapterError(f"no performer Organization identified under {INSTITUTION_SYSTEM}", f"{where}.performer")


def _patient(report: Located, index: ResourceIndex) -> Patient:
    patient = index.resolve(report.resource.subject, "Patient", f"{report.location}.subject", report)
    for i, ident in enumerate(patient.resource.identifier or ()):
        typed = any(c.code == "NNCHN" for c in (ident.type.coding if ident.type else None) or ())
        if (ident.system in RESIDENT_ID_SYSTEMS or typed) and ident.value:
            birth = patient.resource.birthDate
            return Patient(resident_id=ident.value, sex=patient.resource.gender,
                           birth_year=birth.year if isinstance(birth, date) else None,
                           location=f"{patient.location}.identifier[{i}]")
    raise AdapterError("Patient carries no resident ID (system urn:oid:2.16.156.10011.1.3 or type NNCHN)",
                       f"{patient.location}.identifier")

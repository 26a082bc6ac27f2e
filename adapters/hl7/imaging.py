"""ORU^R01 radiology results (a RIS's report of an imaging study) → :class:`~adapters.report.ImagingReport`.

An OBR is an imaging report when (docs/rules.md, "Statuses and versions"):

- OBR-24 (diagnostic service section ID, HL7 table 0074) names an imaging section — RAD, RX, CT, NMR, US, … —
  listed in ``data/imaging_sections.csv`` with the modality it implies; or
- OBR-4 (universal service ID) maps to a unified imaging item through the institution's imaging mapping table
  (the caller's ``is_imaging_service``); or
- every OBX is text (TX, FT, ST, ED) or a reference pointer (RP), and one of them carries a DICOM Study Instance
  UID (OBX-3 ``113014`` of DCM or ``Study Instance UID``; OBX-5 a UID: digits and dots, PS3.5 §9.1).

Its result ID is the accession number, which joins it to the DICOM study of the same issuer: OBR-18 (placer
field 1), where IHE Radiology (RAD TF-2, order and results messages) and most Chinese RIS put it; else OBR-3
(filler order number, the RIS's own number for the requested procedure), else OBR-2. Text OBX become the
findings; an OBX whose OBX-3 is an impression (LOINC 19005-8, or an identifier suffixed ``&IMP`` as in DICOM
SR-to-HL7 mappings, PS3.20) becomes the impression. Status and version follow the lab rules (final → version 2),
so a final report is a higher version than the image-only DICOM study (version 1, preliminary).
"""
from __future__ import annotations

import csv
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from importlib import resources

from adapters.hl7.exceptions import Hl7Error
from adapters.hl7.segments import Segment
from adapters.report import Code, ImagingReport, Patient, Study, Value

_TEXT_TYPES = ("TX", "FT", "ST", "ED")
_POINTER_TYPES = ("RP",)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_STUDY_UID_CODES = ("113014", "STUDY INSTANCE UID", "STUDYINSTANCEUID")
_IMPRESSION_CODES = ("19005-8",)
_DERIVED_UIDS = uuid.UUID("6f1d3c36-9d5e-4a8c-8f0e-1b1f3a8e2c55")  # namespace of UIDs derived from an accession

IsImagingService = Callable[[Sequence[Code]], bool]


@cache
def imaging_sections() -> dict[str, str]:
    """OBR-24 section → the modality it implies."""
    with resources.files("adapters.hl7").joinpath("data/imaging_sections.csv").open(encoding="utf-8") as f:
        return {row["section"].upper(): row["modality"] for row in csv.DictReader(f)}


def _study_uid(obx: Segment) -> str | None:
    if obx.get(2).upper() not in _TEXT_TYPES + _POINTER_TYPES:
        return None
    ident = obx.get(3).upper()
    name = obx.get(3, comp=2).upper()
    value = obx.get(5).strip()
    if (ident in _STUDY_UID_CODES or name in _STUDY_UID_CODES) and _UID.match(value) and len(value) <= 64:
        return value
    return None


def study_uid_of(observations: Sequence[Segment]) -> str | None:
    """The DICOM Study Instance UID an OBX carries, if any."""
    return next((uid for uid in map(_study_uid, observations) if uid), None)


def is_imaging(obr: Segment, observations: Sequence[Segment], codes: Sequence[Code],
               is_imaging_service: IsImagingService | None) -> bool:
    """Whether an OBR with its OBX is a radiology result (the three tests of the module docstring)."""
    if obr.get(24).upper() in imaging_sections():
        return True
    if is_imaging_service is not None and is_imaging_service(codes):
        return True
    return (bool(observations) and all(o.get(2).upper() in _TEXT_TYPES + _POINTER_TYPES for o in observations)
            and study_uid_of(observations) is not None)


def accession_of(obr: Segment) -> tuple[str, str] | None:
    """The accession number and the field it came from: OBR-18, else OBR-3, else OBR-2."""
    for n in (18, 3, 2):
        if value := obr.get(n):
            return value, obr.loc(n)
    return None


def imaging_report(obr: Segment, observations: Sequence[tuple[Segment, Value]], *, institution: str,
                   codes: Sequence[Code], status: str, version: int, patient: Patient, reported_at: datetime,
                   message_id: str | None) -> ImagingReport:
    """The :class:`ImagingReport` of a radiology OBR and its (text) OBX values."""
    found = accession_of(obr)
    if found is None:
        raise Hl7Error("OBR-18 (accession number), OBR-3 or OBR-2 is required: it identifies the imaging result",
                       obr.loc(18), "101")
    accession, where = found
    if len(accession) > 64:
        raise Hl7Error("accession number longer than 64 characters", where, "102")
    findings: list[str] = []
    impressions: list[str] = []
    for obx, value in observations:
        if _study_uid(obx) or not value.text:
            continue
        ident = obx.get(3).upper()
        (impressions if ident in _IMPRESSION_CODES or ident.endswith("&IMP") else findings).append(value.text)
    uid = study_uid_of([obx for obx, _ in observations])
    if uid is None:  # the images' UID is joined in by the store; until then one derived from the accession
        uid = "2.25." + str(uuid.uuid5(_DERIVED_UIDS, f"{institution}|{accession}").int)
    study = Study(study_instance_uid=uid, modality=imaging_sections().get(obr.get(24).upper(), "OT"),
                  accession_number=accession, description=(codes[0].display if codes else None))
    return ImagingReport(
        institution=institution, result_id=accession, version=version, status=status, patient=patient,
        study=study, reported_at=reported_at, codes=codes, findings="\n\n".join(findings)[:20000] or None,
        impression="\n\n".join(impressions)[:8000] or None, message_id=message_id, location=obr.loc())

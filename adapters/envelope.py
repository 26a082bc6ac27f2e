"""The envelope step: the ``hr.lab-result.v1`` / ``hr.imaging-result.v1`` event of a mapped report.

Its input is what the steps before it produced — a report the map step mapped (:class:`MappedLabReport`,
:class:`MappedImagingReport`) and a :class:`PseudonymizedPatient` — so nothing here looks a code up or sees a
resident ID. Times are written as RFC 3339 with their offset (docs/rules.md, "Dates"). The event still has
to pass the validate step before it is published.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from adapters.report import MappedImagingReport, MappedLabReport, PseudonymizedPatient
from schemas import events

LAB_RESULT = "hr.lab-result.v1"
IMAGING_RESULT = "hr.imaging-result.v1"


def patient_object(patient: PseudonymizedPatient) -> dict[str, Any]:
    """The event's ``patient``: pseudonym, key id, sex and birth year — never a resident ID."""
    return {"pseudonym": patient.pseudonym, "key_id": patient.key_id, "sex": patient.sex,
            "birth_year": patient.birth_year}


def source_object(adapter: str, message_id: str | None, received_at: datetime) -> dict[str, Any]:
    """The event's ``source``: which adapter received it, the sender's message id, and when."""
    return {"adapter": adapter, "message_id": message_id, "received_at": events.timestamp(received_at)}


def lab_result_event(mapped: MappedLabReport, patient: PseudonymizedPatient, adapter: str,
                     received_at: datetime) -> dict[str, Any]:
    """The ``hr.lab-result.v1`` event of a mapped lab report, with a new event id."""
    report = mapped.report
    return {
        "schema": LAB_RESULT, "event_id": events.new_event_id(), "issuer": report.institution,
        "result_id": report.result_id, "version": report.version, "status": report.status,
        "patient": patient_object(patient),
        "item": mapped.item,
        "observations": list(mapped.observations),
        "specimen": {"type": report.specimen_type, "id": report.specimen_id},
        "collected_at": events.timestamp(report.collected_at) if report.collected_at else None,
        "reported_at": events.timestamp(report.reported_at),
        "source": source_object(adapter, report.message_id, received_at),
    }


def imaging_result_event(mapped: MappedImagingReport, patient: PseudonymizedPatient, adapter: str,
                         received_at: datetime) -> dict[str, Any]:
    """The ``hr.imaging-result.v1`` event of a mapped imaging report (study metadata, never pixel data)."""
    report = mapped.report
    study = report.study
    shape = {"study_instance_uid": study.study_instance_uid, "accession_number": study.accession_number,
             "modality": study.modality, "body_part": study.body_part, "technique": study.technique,
             "description": study.description, "series_count": study.series_count,
             "instance_count": study.instance_count,
             "study_at": events.timestamp(study.study_at) if study.study_at else None}
    if study.requested_procedure:  # optional in the schema: kept so a re-map sees what ingest saw
        shape["requested_procedure"] = study.requested_procedure
    return {
        "schema": IMAGING_RESULT, "event_id": events.new_event_id(), "issuer": report.institution,
        "result_id": report.result_id, "version": report.version, "status": report.status,
        "patient": patient_object(patient),
        "item": mapped.item,
        "study": shape,
        "report": ({"findings": report.findings, "impression": report.impression}
                   if report.findings or report.impression else None),
        "retrieval": report.retrieval,
        "reported_at": events.timestamp(report.reported_at),
        "source": source_object(adapter, report.message_id, received_at),
    }

"""The one path every adapter shares: map → pseudonymize → build event → validate → publish.

Adapters only parse their wire format into :class:`LabReport` / :class:`ImagingReport`; everything after
that — code mapping with unit conversion (``codes/``), the keyed pseudonym, the versioned event
(``schemas/``) and the acknowledged publish to Kafka — happens here, once.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from codes import CodeBook
from schemas.statuses import STATUSES
from schemas import events
from schemas.resident_id import InvalidResidentId
from adapters.pseudonymize import Pseudonymizer
from adapters.publish import Publisher, Record



class AdapterError(ValueError):
    """Input that cannot become an event; ``location`` names the field (FHIR path, HL7 SEG-n, CSV column)."""

    def __init__(self, message: str, location: str | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.code = code

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


@dataclass(frozen=True)
class Code:
    """A code as the source sent it: ``system`` None means the institution's local code table."""

    code: str
    system: str | None = None
    display: str | None = None
    qualifier: str | None = None


@dataclass(frozen=True)
class Value:
    kind: str = "none"  # quantity | text | coded | none
    number: float | None = None
    comparator: str | None = None
    text: str | None = None
    unit: str | None = None
    ref_low: float | None = None
    ref_high: float | None = None
    ref_text: str | None = None
    interpretation: str | None = None
    date: str | None = None  # ISO 8601 date or date-time of a date-valued result (kind text, the same in text)


@dataclass(frozen=True)
class LabObservation:
    codes: Sequence[Code]  # alternatives (e.g. local + LOINC); the first one that maps wins
    value: Value
    location: str | None = None  # where it was in the source, for error messages


@dataclass(frozen=True)
class Patient:
    resident_id: str
    sex: str | None = None
    birth_year: int | None = None
    location: str | None = None


@dataclass(frozen=True)
class LabReport:
    """A lab report as parsed from any source, before mapping and pseudonymization."""

    institution: str
    result_id: str
    version: int
    status: str
    patient: Patient
    codes: Sequence[Code]
    observations: Sequence[LabObservation]
    reported_at: datetime
    collected_at: datetime | None = None
    specimen_type: str | None = None
    specimen_id: str | None = None
    message_id: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class Study:
    """DICOM study metadata (PS3.3 General Study / Series modules) — never pixel data."""

    study_instance_uid: str
    modality: str
    accession_number: str | None = None
    body_part: str | None = None
    technique: str | None = None  # plain | contrast | … (codes/ items' technique vocabulary)
    description: str | None = None
    series_count: int | None = None
    instance_count: int | None = None
    study_at: datetime | None = None


@dataclass(frozen=True)
class ImagingReport:
    """An imaging or function-exam result as parsed from any source, before mapping and pseudonymization."""

    institution: str
    result_id: str
    version: int
    status: str
    patient: Patient
    study: Study
    reported_at: datetime
    codes: Sequence[Code] = ()  # procedure codes (e.g. ProcedureCodeSequence), tried before the study shape
    findings: str | None = None
    impression: str | None = None
    retrieval: dict[str, Any] | None = None  # {ae_title, host, port, wado_rs}
    message_id: str | None = None
    location: str | None = None


@dataclass
class ResultPipeline:
    """Turns parsed reports into validated events and publishes them, all or none."""

    book: CodeBook
    pseudonymizer: Pseudonymizer
    publisher: Publisher | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def check_institution(self, institution: str, location: str | None = None) -> None:
        if institution not in self.book.institutions:
            raise AdapterError(f"unknown institution {institution!r}: not in the institution registry",
                               location, code="not-found")

    def pseudonym(self, patient: Patient) -> dict[str, Any]:
        try:
            pseudonym = self.pseudonymizer.pseudonym(patient.resident_id)
        except InvalidResidentId as exc:
            raise AdapterError(str(exc), patient.location) from None
        return {"pseudonym": pseudonym, "key_id": self.pseudonymizer.key_id, "sex": patient.sex,
                "birth_year": patient.birth_year}

    def map_code(self, institution: str, codes: Sequence[Code]) -> tuple[dict[str, Any], Any]:
        """The event's coded item and the mapping (for unit conversion); unmapped codes are kept, not dropped.

        Alternatives are tried in order; a LOINC code goes through the institution's table first and then the
        unified items' LOINC column (``CodeBook.map_code``); any other system is the institution's local table.
        """
        if not codes:
            raise AdapterError("no code given")
        code, mapping = codes[0], None
        for candidate in codes:
            mapping = self.book.map_code(institution, candidate.code, candidate.system, candidate.qualifier)
            if mapping is not None:
                code = candidate
                break
        # The institution's table version in force is recorded even when nothing mapped: when the table
        # changes, results stored under an older version are re-evaluated (exchange/remap.py).
        item = {"unified_code": mapping.unified_code if mapping else None, "local_code": code.code,
                "local_system": code.system, "local_name": code.display,
                "mapping_version": self.book.mapping_version(institution),
                "mapping_issue": None if mapping else "no mapping for this local code"}
        return item, mapping

    def observation(self, institution: str, seq: int, obs: LabObservation) -> dict[str, Any]:
        item, mapping = self.map_code(institution, obs.codes)
        v = obs.value
        out: dict[str, Any] = {
            "seq": seq, "item": item, "value_type": v.kind, "value": v.number, "comparator": v.comparator,
            "value_text": v.text, "unit": v.unit, "original": None,
            "reference_range": ({"low": v.ref_low, "high": v.ref_high, "text": v.ref_text}
                                if v.ref_low is not None or v.ref_high is not None or v.ref_text else None),
            "interpretation": v.interpretation,
        }
        if v.date is not None:  # optional in the schema: events without a date value are unchanged
            out["value_date"] = v.date
        if mapping is not None and v.kind == "quantity":
            _convert_units(out, mapping)
        return out

    def _check_report(self, report: LabReport | ImagingReport, *moments: datetime | None) -> None:
        """What every report needs before it can become an event: a known issuer, a status, zoned times."""
        self.check_institution(report.institution, report.location)
        if report.status not in STATUSES:
            raise AdapterError(f"status {report.status!r} is not one of {', '.join(STATUSES)}", report.location)
        if any(moment is not None and moment.tzinfo is None for moment in moments):
            raise AdapterError("date-times must carry a time zone offset", report.location)

    def _envelope(self, schema: str, report: LabReport | ImagingReport) -> dict[str, Any]:
        """The fields every result event starts with, the patient already pseudonymized."""
        return {"schema": schema, "event_id": events.new_event_id(), "issuer": report.institution,
                "result_id": report.result_id, "version": report.version, "status": report.status,
                "patient": self.pseudonym(report.patient)}

    def _source(self, adapter: str, message_id: str | None) -> dict[str, Any]:
        return {"adapter": adapter, "message_id": message_id, "received_at": events.timestamp(self.received_at)}

    def lab_event(self, report: LabReport, adapter: str) -> dict[str, Any]:
        """Map, pseudonymize and build the ``hr.lab-result.v1`` event; raises AdapterError on bad input."""
        self._check_report(report, report.reported_at, report.collected_at)
        if not report.observations:
            raise AdapterError("a lab report needs at least one observation", report.location)
        item, _ = self.map_code(report.institution, report.codes)
        event = {
            **self._envelope("hr.lab-result.v1", report),
            "item": item,
            "observations": [self.observation(report.institution, i, o) for i, o in enumerate(report.observations)],
            "specimen": {"type": report.specimen_type, "id": report.specimen_id},
            "collected_at": events.timestamp(report.collected_at) if report.collected_at else None,
            "reported_at": events.timestamp(report.reported_at),
            "source": self._source(adapter, report.message_id),
        }
        if item["unified_code"] is None:
            infer_report_item(event)
        return _validated("lab-result.v1", event, report.location)

    def imaging_item(self, report: ImagingReport) -> dict[str, Any]:
        """Map a study to a unified imaging item: its procedure codes through the institution's table first,
        then the study's shape (Modality + BodyPartExamined + technique) through the items' DICOM columns."""
        if report.codes:
            item, mapping = self.map_code(report.institution, report.codes)
            if mapping is not None:
                return item
        study = report.study
        found = self.book.imaging_item(study.modality, study.body_part, study.technique)
        first = report.codes[0] if report.codes else None
        local = first.code if first else "/".join(p or "-" for p in (study.modality, study.body_part, study.technique))
        return {"unified_code": found.code if found else None, "local_code": local[:64],
                "local_system": first.system if first else "dicom", "local_name": study.description,
                "mapping_version": None,
                "mapping_issue": None if found else "no unified imaging item for this procedure / study shape"}

    def imaging_event(self, report: ImagingReport, adapter: str) -> dict[str, Any]:
        """Map, pseudonymize and build the ``hr.imaging-result.v1`` event; raises AdapterError on bad input."""
        study = report.study
        self._check_report(report, report.reported_at, study.study_at)
        event = {
            **self._envelope("hr.imaging-result.v1", report),
            "item": self.imaging_item(report),
            "study": {"study_instance_uid": study.study_instance_uid, "accession_number": study.accession_number,
                      "modality": study.modality, "body_part": study.body_part, "technique": study.technique,
                      "description": study.description, "series_count": study.series_count,
                      "instance_count": study.instance_count,
                      "study_at": events.timestamp(study.study_at) if study.study_at else None},
            "report": ({"findings": report.findings, "impression": report.impression}
                       if report.findings or report.impression else None),
            "retrieval": report.retrieval,
            "reported_at": events.timestamp(report.reported_at),
            "source": self._source(adapter, report.message_id),
        }
        return _validated("imaging-result.v1", event, report.location)

    def publish(self, built: Sequence[dict[str, Any]]) -> None:
        """Publish events (already validated) and return once Kafka acknowledged every one of them."""
        if self.publisher is None:
            raise RuntimeError("this pipeline has no publisher")
        self.publisher.publish(
            Record(events.TOPIC_OF_SCHEMA[e["schema"]], e["patient"]["pseudonym"], events.encode(e)) for e in built)


def _validated(schema: str, event: dict[str, Any], location: str | None) -> dict[str, Any]:
    try:
        events.validate(schema, event)
    except events.InvalidEvent as exc:
        raise AdapterError("; ".join(exc.errors), location) from None
    return event


def _convert_units(obs: dict[str, Any], mapping: Any) -> None:
    """Apply the mapping's conversion when the hospital reports the mapping's source unit.

    A unit that is neither the source nor the target unit cannot be trusted: the value is kept as sent and
    the observation becomes unmapped (viewable, never recognizable) with the reason.
    """
    unit = obs["unit"]
    target = mapping.target_unit
    if target is None or unit == target:
        return
    if mapping.source_unit is not None and unit == mapping.source_unit:
        factor, offset = mapping.factor, mapping.offset
        ref = obs["reference_range"]
        obs["original"] = {"value": obs["value"], "unit": unit,
                           "reference_range": dict(ref) if ref else None}
        if obs["value"] is not None:
            obs["value"] = round(obs["value"] * factor + offset, 6)
        if ref:
            for bound in ("low", "high"):
                if ref[bound] is not None:
                    ref[bound] = round(ref[bound] * factor + offset, 6)
        obs["unit"] = target
        return
    obs["item"]["mapping_issue"] = (f"unit {unit!r} is neither the mapped unit {target!r} nor a convertible "
                                    f"source unit {mapping.source_unit!r}")
    obs["item"]["unified_code"] = None


def infer_report_item(event: dict[str, Any]) -> None:
    """A report whose own code is unmapped but holds exactly one mapped observation is that item's result."""
    mapped = {o["item"]["unified_code"] for o in event["observations"] if o["item"]["unified_code"]}
    if len(event["observations"]) == 1 and len(mapped) == 1:
        event["item"]["unified_code"] = mapped.pop()
        event["item"]["mapping_issue"] = None


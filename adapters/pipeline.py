"""The ingest pipeline every source shares, as named steps, and :class:`ResultPipeline` composing them.

1. parse — each adapter turns its wire format into an ``adapters.report`` container;
2. check — :func:`check_report`: a known issuer, a known status, zoned times;
3. map — :func:`map_lab_report` / :func:`map_imaging_report`, code mapping and unit conversion by
   ``codes.mapping``;
4. pseudonymize — :func:`pseudonymize_patient`, the keyed pseudonym of ``adapters.pseudonymize``
   (docs/rules.md, "Privacy");
5. envelope — ``adapters.envelope`` builds the versioned event;
6. validate — :func:`validate_event` against the event's JSON Schema (``schemas.events``);
7. publish — :func:`publish_events` through ``adapters.publish``, returning once Kafka acknowledged.

What cannot become an event is dead-lettered through ``adapters.dead_letter``.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters import metrics
from adapters.envelope import imaging_result_event, lab_result_event
from adapters.pseudonymize import Pseudonymizer
from adapters.publish import BrokerUnavailable, Publisher, Record
from codes import CodeBook, mapping
from codes.bounds import out_of_bounds
from schemas import events
from schemas.resident_id import InvalidResidentId
from schemas.statuses import STATUSES
from schemas.topics import TOPIC_OF_SCHEMA

from adapters.report import (
    AdapterError,
    ImagingReport,
    LabReport,
    MappedImagingReport,
    MappedLabReport,
    Patient,
    PseudonymizedPatient,
)


def check_institution(book: CodeBook, institution: str, location: str | None = None) -> None:
    """Refuse an issuer the institution registry does not know (AdapterError code ``not-found``)."""
    if institution not in book.institutions:
        raise AdapterError(f"unknown institution {institution!r}: not in the institution registry",
                           location, code="not-found")


def check_report(book: CodeBook, report: LabReport | ImagingReport, *moments: datetime | None) -> None:
    """What every report needs before it can become an event: a known issuer, a status, zoned times
    (a time without an offset is ambiguous, docs/rules.md "Dates")."""
    check_institution(book, report.institution, report.location)
    if report.status not in STATUSES:
        raise AdapterError(f"status {report.status!r} is not one of {', '.join(STATUSES)}", report.location)
    if any(moment is not None and moment.tzinfo is None for moment in moments):
        raise AdapterError("date-times must carry a time zone offset", report.location)


def map_lab_report(book: CodeBook, report: LabReport) -> MappedLabReport:
    """The map step for a lab report: every observation's item and value (converted where the mapping says
    how), then the report's own item — or, when that is unmapped, its single mapped observation's item."""
    if not report.observations:
        raise AdapterError("a lab report needs at least one observation", report.location)
    try:
        item, _ = mapping.map_code(book, report.institution, report.codes)
        observations = [mapping.map_observation(book, report.institution, seq, obs.codes, obs.value)
                        for seq, obs in enumerate(report.observations)]
    except mapping.NoCode as exc:
        raise AdapterError(str(exc)) from None
    check_bounds(book, report, observations)
    return MappedLabReport(report, mapping.infer_report_item(item, observations), observations)


def check_bounds(book: CodeBook, report: LabReport, observations: list[dict[str, Any]]) -> None:
    """Refuse a quantity its unified item cannot physically have (``codes/data/item_bounds.csv``), judged in
    the item's unit, i.e. after the map step converted it. ``code`` "value" tells a door that the value itself
    (OBX-5, ``value[x]``, the value column) is at fault."""
    for obs, sent in zip(observations, report.observations, strict=True):
        code = obs["item"]["unified_code"]
        if code is None or obs["value_type"] != "quantity" or obs["value"] is None:
            continue
        why = out_of_bounds(book, code, obs["value"], obs["unit"], obs["comparator"])
        if why is not None:
            raise AdapterError(why, sent.location or report.location, code="value")


def map_imaging_report(book: CodeBook, report: ImagingReport) -> MappedImagingReport:
    """The map step for an imaging report: its procedure codes, then its study's shape."""
    return MappedImagingReport(report, mapping.imaging_item(book, report.institution, report.codes, report.study))


def pseudonymize_patient(pseudonymizer: Pseudonymizer,
                         patient: Patient | PseudonymizedPatient) -> PseudonymizedPatient:
    """The pseudonymize step: a patient's resident ID becomes the keyed pseudonym (an invalid ID is an
    AdapterError at the patient's location). A patient the source already pseudonymized passes unchanged,
    under the key id it was made with."""
    if isinstance(patient, PseudonymizedPatient):
        return patient
    try:
        pseudonym = pseudonymizer.pseudonym(patient.resident_id)
    except InvalidResidentId as exc:
        raise AdapterError(str(exc), patient.location) from None
    return PseudonymizedPatient(pseudonym, pseudonymizer.key_id, patient.sex, patient.birth_year, patient.location)


def validate_event(schema: str, event: dict[str, Any], location: str | None = None) -> dict[str, Any]:
    """The validate step: the event against its JSON Schema; every violation (with its JSON path) in one
    AdapterError at the report's location."""
    try:
        events.validate(schema, event)
    except events.InvalidEvent as exc:
        raise AdapterError("; ".join(exc.errors), location) from None
    return event


def publish_events(publisher: Publisher, built: Sequence[dict[str, Any]]) -> None:
    """The publish step: each event to its schema's topic, keyed by the patient pseudonym (one patient's
    events stay in order), returning once the broker acknowledged all of them.

    Counted per door (``source.adapter``): the time to the acknowledgement, the events acknowledged, and the
    publishes refused (:mod:`adapters.metrics`)."""
    if not built:
        return
    door = built[0]["source"]["adapter"]
    started = time.perf_counter()
    try:
        publisher.publish(
            Record(TOPIC_OF_SCHEMA[e["schema"]], e["patient"]["pseudonym"], events.encode(e)) for e in built)
    except BrokerUnavailable:
        metrics.PUBLISH_FAILURES.labels(door).inc()
        raise
    metrics.PUBLISH_SECONDS.labels(door).observe(time.perf_counter() - started)
    metrics.RESULTS_ACKNOWLEDGED.labels(door).inc(len(built))


@dataclass
class ResultPipeline:
    """The steps composed: parsed reports in, validated events out, published all or none."""

    book: CodeBook
    pseudonymizer: Pseudonymizer
    publisher: Publisher | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def check_institution(self, institution: str, location: str | None = None) -> None:
        check_institution(self.book, institution, location)

    def lab_event(self, report: LabReport, adapter: str) -> dict[str, Any]:
        """Check, map, pseudonymize, envelope and validate: the ``hr.lab-result.v1`` event; AdapterError on bad
        input."""
        metrics.RESULTS_RECEIVED.labels(adapter).inc()
        check_report(self.book, report, report.reported_at, report.collected_at)
        mapped = map_lab_report(self.book, report)
        patient = pseudonymize_patient(self.pseudonymizer, report.patient)
        event = lab_result_event(mapped, patient, adapter, self.received_at)
        return validate_event("lab-result.v1", event, report.location)

    def imaging_event(self, report: ImagingReport, adapter: str) -> dict[str, Any]:
        """Check, map, pseudonymize, envelope and validate: the ``hr.imaging-result.v1`` event; AdapterError on
        bad input."""
        metrics.RESULTS_RECEIVED.labels(adapter).inc()
        check_report(self.book, report, report.reported_at, report.study.study_at)
        mapped = map_imaging_report(self.book, report)
        patient = pseudonymize_patient(self.pseudonymizer, report.patient)
        event = imaging_result_event(mapped, patient, adapter, self.received_at)
        return validate_event("imaging-result.v1", event, report.location)

    def publish(self, built: Sequence[dict[str, Any]]) -> None:
        """Publish events (already validated) and return once Kafka acknowledged every one of them."""
        if self.publisher is None:
            raise RuntimeError("this pipeline has no publisher")
        publish_events(self.publisher, built)

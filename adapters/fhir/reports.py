"""A Bundle's DiagnosticReports → validated result events, all of them or none.

Rules implemented:
- every DiagnosticReport of the Bundle must be usable or none is published (all-or-nothing validation);
- each report is a lab report (:mod:`.lab`) or an imaging / function-exam report (:mod:`.imaging`);
- an event the contract refuses is refused naming the Observation at fault, not only the report.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from adapters.fhir.bundle import read_bundle
from adapters.fhir.identity import report_identity
from adapters.fhir.imaging import imaging_report, is_imaging
from adapters.fhir.lab import lab_report
from adapters.report import AdapterError, ImagingReport, LabReport
from adapters.pipeline import ResultPipeline

_OBSERVATION_PATH = re.compile(r"^\$\.observations\[(\d+)\]")


@dataclass(frozen=True)
class FhirReport:
    """One parsed report, and whether its version was sent (``meta.versionId``) or is its status rank."""

    report: LabReport | ImagingReport
    version_explicit: bool


@dataclass(frozen=True)
class BuiltEvent:
    """One validated event, ready to publish, with what the door needs to check it against the store."""

    event: dict[str, Any]
    version_explicit: bool
    location: str | None


def read_reports(data: Any) -> list[FhirReport]:
    """Every report of a Bundle (as decoded JSON); AdapterError naming the offending element."""
    bundle, index = read_bundle(data)
    reports = index.entries("DiagnosticReport")
    if not reports:
        raise AdapterError("the Bundle holds no DiagnosticReport", "Bundle.entry")
    message_id = bundle.identifier.value if bundle.identifier else None
    parsed = []
    for report in reports:
        identity = report_identity(report, index)
        if is_imaging(report.resource):
            built: LabReport | ImagingReport = imaging_report(report, index, identity, message_id)
        else:
            built = lab_report(report, index, identity, message_id)
        parsed.append(FhirReport(built, identity.version_explicit))
    return parsed


def parse_bundle(data: Any) -> list[LabReport | ImagingReport]:
    """The reports of a Bundle, parsed but not yet mapped."""
    return [r.report for r in read_reports(data)]


def _event(pipeline: ResultPipeline, report: LabReport | ImagingReport) -> dict[str, Any]:
    if isinstance(report, ImagingReport):
        return pipeline.imaging_event(report, "fhir")
    try:
        return pipeline.lab_event(report, "fhir")
    except AdapterError as exc:
        found = _OBSERVATION_PATH.match(exc.message)
        if found is None or int(found[1]) >= len(report.observations):
            raise
        raise AdapterError(exc.message, report.observations[int(found[1])].location, exc.code) from None


def build_events(pipeline: ResultPipeline, data: Any) -> list[BuiltEvent]:
    """Every event of one Bundle, validated — or an AdapterError and no event at all."""
    return [BuiltEvent(_event(pipeline, r.report), r.version_explicit, r.report.location)
            for r in read_reports(data)]


def bundle_events(pipeline: ResultPipeline, data: Any) -> list[dict[str, Any]]:
    """The events of :func:`build_events`."""
    return [built.event for built in build_events(pipeline, data)]

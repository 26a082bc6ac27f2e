"""FHIR R4 results: a Bundle (transaction or collection) of DiagnosticReports with their Observations or
ImagingStudy, Patient and Organization → the shared result pipeline.

Modules, in the order a Bundle meets them:

- :mod:`.bundle`: R4 structure validation and the accepted Bundle types;
- :mod:`.references`: references among entries and contained resources, and panels (``hasMember``);
- :mod:`.identity`: issuer, patient, result id, status and version of each report;
- :mod:`.lab`: laboratory reports and their values;
- :mod:`.imaging`: imaging and function-exam reports and their study;
- :mod:`.reports`: the Bundle's reports → validated events, all or none;
- :mod:`.outcome`: the bounded OperationOutcome of a refusal.

Each module's docstring lists the rules it implements; docs/rules.md, "Statuses and versions", "Delivery"
and "Privacy", gives the exchange-wide ones. The door (``POST /fhir``, ``hrx adapter fhir``) also checks the
events against the store before publishing (``exchange/conflicts.py``).
"""
from __future__ import annotations

from adapters.fhir.bundle import read_bundle
from adapters.fhir.identity import INSTITUTION_SYSTEM, REPORT_NUMBER_SYSTEM, RESIDENT_ID_SYSTEMS, result_id
from adapters.fhir.imaging import is_imaging
from adapters.fhir.lab import CODE_TEXT_SYSTEM
from adapters.fhir.outcome import BundleRefused, Issue, operation_outcome, shorten
from adapters.fhir.reports import BuiltEvent, FhirReport, build_events, bundle_events, parse_bundle, read_reports

__all__ = [
    "BuiltEvent", "BundleRefused", "CODE_TEXT_SYSTEM", "FhirReport", "INSTITUTION_SYSTEM", "Issue",
    "REPORT_NUMBER_SYSTEM", "RESIDENT_ID_SYSTEMS", "build_events", "bundle_events", "is_imaging",
    "operation_outcome", "parse_bundle", "read_bundle", "read_reports", "result_id", "shorten",
]

"""The containers every source's parser produces, and what the steps after parsing hand on.

A parser (HL7 v2, FHIR, CSV, DICOM) turns its wire format into a :class:`LabReport` or an
:class:`ImagingReport`; the map step (``codes.mapping``) makes a :class:`MappedLabReport` /
:class:`MappedImagingReport` of it and the pseudonymize step a :class:`PseudonymizedPatient` of its patient,
from which the envelope step (``adapters.envelope``) builds the event. Input that cannot become an event
raises :class:`AdapterError` naming where it was.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


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
    """The patient as the source identified them: the raw resident ID, which only the pseudonymize step reads."""

    resident_id: str
    sex: str | None = None
    birth_year: int | None = None
    location: str | None = None


@dataclass(frozen=True)
class PseudonymizedPatient:
    """The patient as events carry them: the keyed pseudonym and the id of the key it was made with.

    The pseudonymize step makes one of a :class:`Patient`. A source that pseudonymizes earlier (the DICOM
    spool keeps only pseudonyms, docs/rules.md "Privacy") puts one in its report itself, and the pipeline
    then passes it through unchanged.
    """

    pseudonym: str
    key_id: str
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
    patient: Patient | PseudonymizedPatient
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
    description: str | None = None  # StudyDescription
    series_count: int | None = None
    instance_count: int | None = None
    study_at: datetime | None = None
    requested_procedure: str | None = None  # RequestedProcedureDescription, a key of imaging mapping tables


@dataclass(frozen=True)
class ImagingReport:
    """An imaging or function-exam result as parsed from any source, before mapping and pseudonymization."""

    institution: str
    result_id: str
    version: int
    status: str
    patient: Patient | PseudonymizedPatient
    study: Study
    reported_at: datetime
    codes: Sequence[Code] = ()  # procedure codes (e.g. ProcedureCodeSequence), tried before the study shape
    findings: str | None = None
    impression: str | None = None
    retrieval: dict[str, Any] | None = None  # {ae_title, host, port, wado_rs}
    message_id: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class MappedLabReport:
    """A lab report after the map step: the report's own item and one observation object per observation."""

    report: LabReport
    item: dict[str, Any]
    observations: Sequence[dict[str, Any]]


@dataclass(frozen=True)
class MappedImagingReport:
    """An imaging report after the map step: its unified imaging item."""

    report: ImagingReport
    item: dict[str, Any]

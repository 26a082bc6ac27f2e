"""An imaging DiagnosticReport (and its ImagingStudy) → :class:`~adapters.pipeline.ImagingReport`.

Rules implemented:
- a DiagnosticReport is an imaging or function-exam report when it references an ``imagingStudy`` or one of
  its categories is listed in ``data/imaging_categories.csv`` (radiology and the imaging sections of HL7 v2
  table 0074);
- ``conclusion`` (else the ``conclusionCode`` texts) is the impression; the findings are the ``text/plain``
  ``presentedForm`` attachments, else a narrative the sender wrote itself (``text.status`` other than
  ``generated``: a generated narrative only repeats the structured data), followed by one line per
  Observation result, so no part of the report is lost;
- the report's codes, then the ImagingStudy's ``procedureCode``, are the procedure codes the item is mapped
  from; the study's shape (modality, body site) is the fallback;
- the ImagingStudy gives the study: its DICOM Study Instance UID (identifier system ``urn:dicom:uid``), its
  accession number (identifier type ``ACSN``), modality, body site (the first series'), counts, start time
  (else the report's ``effective`` time) and, from a ``dicom-wado-rs`` Endpoint, the WADO-RS address: that
  is how a receiving site retrieves the images. One report covers one study;
- without an ImagingStudy (or one without a UID) the study UID is derived from the report's key under the
  UUID root ``2.25`` (DICOM PS3.5 B.2), so a resent report keeps it; it names the report's study inside
  the exchange, not a study in anyone's PACS, and such a report has no retrieval pointer. The modality is
  then the category's (``OT``, DICOM's "other", when the category implies none).
"""
from __future__ import annotations

import csv
import re
import uuid
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from adapters.fhir.identity import ReportIdentity, moment
from adapters.fhir.lab import CODE_TEXT_SYSTEM, NAME_LENGTH, concept_codes, lab_observations
from adapters.fhir.references import Located, ResourceIndex
from adapters.report import AdapterError, Code, ImagingReport, Study

CATEGORIES_FILE = Path(__file__).parent / "data" / "imaging_categories.csv"
DICOM_UID_SYSTEM = "urn:dicom:uid"
ACCESSION_TYPE = "ACSN"
WADO_RS = "dicom-wado-rs"
OTHER_MODALITY = "OT"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DERIVED_UIDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:hrx:fhir:imaging-report")
#: The event contract's lengths (schemas/imaging-result.v1.json).
FINDINGS_LENGTH, IMPRESSION_LENGTH, UID_LENGTH, SHORT_LENGTH = 20000, 8000, 64, 64


@cache
def imaging_categories() -> dict[tuple[str, str], str | None]:
    """(system, code) of the imaging categories → the DICOM modality the category implies, if any."""
    with CATEGORIES_FILE.open(encoding="utf-8", newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {(r["system"], r["code"]): r["modality"] or None for r in rows}


def _category_codings(resource: Any) -> list[tuple[str, str]]:
    return [(c.system or "", c.code or "") for cat in resource.category or () for c in cat.coding or ()]


def is_imaging(resource: Any) -> bool:
    """Whether a DiagnosticReport is an imaging or function-exam report (rule above)."""
    categories = imaging_categories()
    return bool(resource.imagingStudy) or any(c in categories for c in _category_codings(resource))


def _category_modality(resource: Any) -> str | None:
    categories = imaging_categories()
    return next((categories[c] for c in _category_codings(resource) if categories.get(c)), None)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _plain(xhtml: str) -> str:
    parser = _Text()
    parser.feed(xhtml)
    return "\n".join(line.strip() for line in "".join(parser.parts).splitlines() if line.strip())


def _attachment_text(attachment: Any) -> str | None:
    content_type = (attachment.contentType or "").lower()
    if not content_type.startswith("text/plain") or attachment.data is None:
        return None
    charset = next((p.split("=", 1)[1].strip() for p in content_type.split(";")[1:] if "charset=" in p), "utf-8")
    try:
        return bytes(attachment.data).decode(charset)
    except (LookupError, UnicodeDecodeError):
        return None


def _value_text(lab: Any) -> str:
    v = lab.value
    if v.kind == "quantity" and v.number is not None:
        return f"{v.comparator or ''}{v.number:g}{' ' + v.unit if v.unit else ''}"
    return v.text or ""


def _findings(report: Located, index: ResourceIndex) -> str | None:
    resource = report.resource
    texts = [t for t in (_attachment_text(a) for a in resource.presentedForm or ()) if t and t.strip()]
    if not texts and resource.text is not None and resource.text.status != "generated" and resource.text.div:
        texts = [_plain(resource.text.div)]
    for observation in index.report_observations(report):
        for lab in lab_observations(observation):
            name, value = lab.codes[0].display or lab.codes[0].code, _value_text(lab)
            texts.append(f"{name}: {value}" if value else name)
    findings = "\n".join(t.strip() for t in texts if t.strip())
    if len(findings) > FINDINGS_LENGTH:
        raise AdapterError(f"the report's text is {len(findings)} characters; the exchange keeps at most "
                           f"{FINDINGS_LENGTH}", f"{report.location}.presentedForm")
    return findings or None


def _impression(report: Located) -> str | None:
    resource = report.resource
    impression = resource.conclusion or "; ".join(
        t for t in (cc.text or next((c.display or c.code for c in cc.coding or ()), None)
                    for cc in resource.conclusionCode or ()) if t)
    if impression and len(impression) > IMPRESSION_LENGTH:
        raise AdapterError(f"conclusion is {len(impression)} characters; the exchange keeps at most "
                           f"{IMPRESSION_LENGTH}", f"{report.location}.conclusion")
    return impression or None


def _short(value: str | None, limit: int, element: str, where: str) -> str | None:
    if value is not None and len(value) > limit:
        raise AdapterError(f"{element} is longer than {limit} characters", where)
    return value


def _study_uid(study: Located) -> str | None:
    for i, ident in enumerate(study.resource.identifier or ()):
        if ident.system == DICOM_UID_SYSTEM and ident.value:
            uid = ident.value.removeprefix("urn:oid:")
            if not _UID.match(uid) or len(uid) > UID_LENGTH:
                raise AdapterError(f"{ident.value!r} is not a DICOM UID", f"{study.location}.identifier[{i}]")
            return uid
    return None


def _accession(study: Located) -> str | None:
    """The accession number: the identifier typed ``ACSN`` (HL7 table 0203) of an ImagingStudy, or of the
    DiagnosticReport itself when it names no study."""
    for i, ident in enumerate(study.resource.identifier or ()):
        typed = any(c.code == ACCESSION_TYPE for c in (ident.type.coding if ident.type else None) or ())
        if typed and ident.value:
            return _short(ident.value, SHORT_LENGTH, "the accession number", f"{study.location}.identifier[{i}]")
    return None


def _wado_rs(study: Located, index: ResourceIndex) -> str | None:
    resource = study.resource
    references = [*(resource.endpoint or ()), *(e for s in resource.series or () for e in s.endpoint or ())]
    for reference in references:
        endpoint = index.find(reference, study)
        if endpoint is None or endpoint.kind != "Endpoint" or not endpoint.resource.address:
            continue
        connection = endpoint.resource.connectionType
        if connection is not None and connection.code == WADO_RS:
            return _short(endpoint.resource.address, 1024, "Endpoint.address", f"{endpoint.location}.address")
    return None


def _derived_uid(identity: ReportIdentity) -> str:
    return "2.25." + str(uuid.uuid5(_DERIVED_UIDS, f"{identity.institution}|{identity.result_id}").int)


def _study(report: Located, index: ResourceIndex, identity: ReportIdentity,
           description: str | None) -> tuple[Study, list[Code], dict[str, Any] | None]:
    resource, where = report.resource, report.location
    references = [r for r in resource.imagingStudy or () if r.reference]
    if len(references) > 1:
        raise AdapterError(f"DiagnosticReport.imagingStudy lists {len(references)} studies: send one report "
                           "per study", f"{where}.imagingStudy")
    fallback_modality = _category_modality(resource) or OTHER_MODALITY
    performed = moment(resource.effectiveDateTime) or (
        moment(resource.effectivePeriod.start) if resource.effectivePeriod is not None else None)
    if not references:
        return (Study(_derived_uid(identity), fallback_modality, accession_number=_accession(report),
                      description=description, study_at=performed), [], None)
    study = index.resolve(references[0], "ImagingStudy", f"{where}.imagingStudy[0]", report)
    s = study.resource
    series = (s.series or [None])[0]
    modality = next((c.code for c in s.modality or () if c.code), None) or (
        series.modality.code if series is not None and series.modality else None) or fallback_modality
    site = series.bodySite if series is not None else None
    body_part = (site.display or site.code) if site is not None else None
    procedure = [code for k, concept in enumerate(s.procedureCode or ())
                 for code in concept_codes(concept, f"{study.location}.procedureCode[{k}]")]
    wado = _wado_rs(study, index)
    return Study(
        study_instance_uid=_study_uid(study) or _derived_uid(identity),
        modality=_short(modality, 16, "the modality", f"{study.location}.modality") or fallback_modality,
        accession_number=_accession(study),
        body_part=_short(body_part, SHORT_LENGTH, "the body site", f"{study.location}.series[0].bodySite"),
        description=(s.description or (s.procedureCode[0].text if s.procedureCode else None)
                     or description or "")[:NAME_LENGTH] or None,
        series_count=s.numberOfSeries, instance_count=s.numberOfInstances,
        study_at=moment(s.started) or performed), procedure, ({"wado_rs": wado} if wado else None)


def imaging_report(report: Located, index: ResourceIndex, identity: ReportIdentity,
                   message_id: str | None) -> ImagingReport:
    """The imaging report of one DiagnosticReport; AdapterError naming the element at fault."""
    resource, where = report.resource, report.location
    codes = concept_codes(resource.code, where) if resource.code is not None else []
    named = next((c.display for c in codes if c.display), None)
    description = (resource.code.text if resource.code is not None else None) or named
    study, procedure, retrieval = _study(report, index, identity, description[:NAME_LENGTH] if description else None)
    # Text stands for a code only when nothing is coded: the study's procedure codes come first then.
    coded = [c for c in codes if c.system != CODE_TEXT_SYSTEM]
    # The accession number keys an imaging result at every door, so the DICOM images of the same study join it
    # (docs/rules.md, "Statuses and versions"); without one, the report's own identifier.
    return ImagingReport(
        institution=identity.institution, result_id=study.accession_number or identity.result_id,
        version=identity.version,
        status=identity.status, patient=identity.patient, study=study, reported_at=identity.reported_at,
        codes=coded + procedure + [c for c in codes if c.system == CODE_TEXT_SYSTEM],
        findings=_findings(report, index), impression=_impression(report), retrieval=retrieval,
        message_id=message_id, location=where)

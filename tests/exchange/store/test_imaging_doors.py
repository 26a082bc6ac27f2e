"""One imaging result from two doors: an image-only DICOM study and its report by HL7 v2 (docs/rules.md,
"Statuses and versions"), in either order; the store joins them into one final result."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest

from adapters.dicom.metadata import build_report, decode, instance_record
from adapters.hl7 import parse_message
from adapters.pipeline import ResultPipeline
from exchange.store.results import Delivery, current_results, ingest
from tests.adapters.dicom import dicomdata as dd

INSTITUTION = "bj-xicheng-001"
RETRIEVAL = {"ae_title": "HRX", "host": "127.0.0.1", "port": 11112, "wado_rs": None}
FINDINGS = "双肺纹理清晰，未见明确结节。"


def _dicom_event(study: dd.Study, pipeline: ResultPipeline, pseudonymizer) -> dict:  # type: ignore[no-untyped-def,type-arg]
    records = []
    for path in study.files:
        body = path.read_bytes()[dd._body_offset(path):]
        syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        records.append(instance_record(decode(body, syntax), pseudonymizer))
    report = build_report(records, institution=INSTITUTION, version=1, result_id=None, previous_status=None,
                          retrieval=RETRIEVAL, received_at=datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    return pipeline.imaging_event(report, "dicom")


def _oru(accession: str, resident_id: str, *, study_uid: str | None = None, section: str = "CT") -> str:
    obr = [""] * 26
    obr[1:5] = ["1", "ORD-9", "RIS-77", "CT-CHEST^胸部CT^L"]
    obr[7], obr[18], obr[22], obr[24], obr[25] = "20260105080000", accession, "20260105113000", section, "F"
    segments = [
        "MSH|^~\\&|RIS|XICHENG|HRX|HRX|20260105120000||ORU^R01^ORU_R01|MSG-1|P|2.5",
        f"PID|1||{resident_id}^^^^NNCHN||张^三||19800312|F",
        "OBR" + "|".join(obr),
        f"OBX|1|TX|59776-5^Findings^LN||{FINDINGS}||||||F",
        "OBX|2|TX|19005-8^Impression^LN||未见异常。||||||F",
    ]
    if study_uid:
        segments.append(f"OBX|3|ST|113014^Study Instance UID^DCM||{study_uid}||||||F")
    return "\r".join(segments) + "\r"


def _hl7_event(accession: str, pipeline: ResultPipeline, **kwargs) -> dict:  # type: ignore[no-untyped-def,type-arg]
    _, reports = parse_message(_oru(accession, dd.RID_CT, **kwargs), INSTITUTION)
    (report,) = reports
    return pipeline.imaging_event(report, "hl7v2")


@pytest.mark.parametrize("images_first", [True, False], ids=["images-then-report", "report-then-images"])
def test_hl7_report_and_dicom_images_make_one_final_result(database, book, pseudonymizer, tmp_path: Path,
                                                           images_first: bool) -> None:  # type: ignore[no-untyped-def]
    pipeline = ResultPipeline(book, pseudonymizer)
    study = dd.ct_study(tmp_path / "ct", accession="ACC-77", with_report=False)
    images = _dicom_event(study, pipeline, pseudonymizer)
    assert (images["result_id"], images["version"], images["status"]) == ("ACC-77", 1, "preliminary")
    report = _hl7_event("ACC-77", pipeline)
    assert (report["result_id"], report["version"], report["status"]) == ("ACC-77", 2, "final")
    assert report["retrieval"] is None and report["study"]["study_instance_uid"] != study.uid
    for offset, event in enumerate((images, report) if images_first else (report, images)):
        with database.begin() as conn:
            ingest(conn, [Delivery(event, "t", 0, offset)])
    with database.connect() as conn:
        (result,) = current_results(conn, images["patient"]["pseudonym"])
    stored = result.event
    assert (result.result_id, result.version, result.status) == ("ACC-77", 2, "final")
    assert stored["report"]["findings"] == FINDINGS and stored["report"]["impression"] == "未见异常。"
    assert stored["retrieval"] == RETRIEVAL
    assert stored["study"]["study_instance_uid"] == study.uid
    assert (stored["study"]["modality"], stored["study"]["body_part"], stored["study"]["instance_count"]) == (
        images["study"]["modality"], images["study"]["body_part"], 3)


def _fhir_event(accession: str, pipeline: ResultPipeline) -> dict:  # type: ignore[type-arg]
    """A radiology DiagnosticReport without an ImagingStudy, naming its study by an ACSN identifier."""
    from adapters.fhir import bundle_events

    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:org", "resource": {"resourceType": "Organization", "identifier": [
            {"system": "urn:hrx:institution", "value": INSTITUTION}]}},
        {"fullUrl": "urn:uuid:pat", "resource": {"resourceType": "Patient", "identifier": [
            {"system": "urn:oid:2.16.156.10011.1.3", "value": dd.RID_CT}]}},
        {"fullUrl": "urn:uuid:rep", "resource": {
            "resourceType": "DiagnosticReport", "status": "final",
            "identifier": [  # the RIS's own report number first: the accession number, not it, keys the result
                {"system": "http://ris.example/reports", "value": "RPT-5501"},
                {"system": "http://ris.example/accession", "value": accession,
                 "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}}],
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
            "code": {"text": "胸部CT"}, "subject": {"reference": "urn:uuid:pat"},
            "issued": "2026-01-05T11:30:00+08:00", "performer": [{"reference": "urn:uuid:org"}],
            "conclusion": "未见异常。"}}]}
    (event,) = bundle_events(pipeline, bundle)
    return event


@pytest.mark.parametrize("images_first", [True, False], ids=["images-then-report", "report-then-images"])
def test_a_fhir_report_joins_the_dicom_images_by_accession_number(database, book, pseudonymizer, tmp_path: Path,
                                                                    images_first: bool) -> None:  # type: ignore[no-untyped-def]
    pipeline = ResultPipeline(book, pseudonymizer)
    study = dd.ct_study(tmp_path / "ct", accession="ACC-78", with_report=False)
    images = _dicom_event(study, pipeline, pseudonymizer)
    report = _fhir_event("ACC-78", pipeline)
    assert (report["result_id"], report["version"], report["status"]) == ("ACC-78", 2, "final")
    for offset, event in enumerate((images, report) if images_first else (report, images)):
        with database.begin() as conn:
            ingest(conn, [Delivery(event, "t", 0, offset)])
    with database.connect() as conn:
        (result,) = current_results(conn, images["patient"]["pseudonym"])
    stored = result.event
    assert (result.result_id, result.version, result.status) == ("ACC-78", 2, "final")
    assert stored["report"]["impression"] == "未见异常。" and stored["retrieval"] == RETRIEVAL
    assert stored["study"]["study_instance_uid"] == study.uid and stored["study"]["instance_count"] == 3


def test_a_preliminary_image_only_study_stays_preliminary(database, book, pseudonymizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pipeline = ResultPipeline(book, pseudonymizer)
    images = _dicom_event(dd.ct_study(tmp_path / "ct", accession="ACC-78", with_report=False), pipeline,
                          pseudonymizer)
    with database.begin() as conn:
        ingest(conn, [Delivery(images, "t", 0, 1)])
    with database.connect() as conn:
        (result,) = current_results(conn, images["patient"]["pseudonym"])
    assert (result.status, result.event["retrieval"]) == ("preliminary", RETRIEVAL)


def test_text_obx_with_a_study_uid_is_an_imaging_report() -> None:
    _, reports = parse_message(_oru("ACC-79", dd.RID_CT, study_uid="1.2.3.4", section=""), INSTITUTION)
    (report,) = reports
    assert type(report).__name__ == "ImagingReport"
    assert (report.result_id, report.study.study_instance_uid, report.findings) == ("ACC-79", "1.2.3.4", FINDINGS)


def test_a_lab_oru_stays_a_lab_report() -> None:
    text = _oru("ACC-80", dd.RID_CT, section="CH").replace("|TX|", "|NM|").replace(FINDINGS, "5.2").replace(
        "未见异常。", "4.1")
    _, reports = parse_message(text, INSTITUTION)
    assert type(reports[0]).__name__ == "LabReport"

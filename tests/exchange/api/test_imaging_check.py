"""An imaging result in the check answer: recognition, report text and the retrieval pointer (both stores)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from adapters.report import ImagingReport, Patient, Study

from adapters.pipeline import ResultPipeline
from exchange.api import Context, create_app
from schemas.resident_id import make_resident_id
from adapters.publish import Publisher
from exchange.store import Delivery, ingest


def test_imaging_result_is_answered_with_its_report_and_pointer(book, database, pseudonymizer, principals) -> None:  # type: ignore[no-untyped-def]
    resident_id = make_resident_id("11010519800312002")
    now = datetime.now(UTC)
    report = ImagingReport(
        institution="bj-chaoyang-001", result_id="ACC-CT-1", version=1, status="final",
        patient=Patient(resident_id), reported_at=now - timedelta(days=2),
        study=Study("1.2.826.0.1.3680043.2.1125.1", "CT", accession_number="ACC-CT-1", body_part="HEAD",
                    technique="plain", description="头颅CT平扫", instance_count=120, study_at=now - timedelta(days=2)),
        findings="脑实质未见异常密度影。", impression="颅脑CT平扫未见异常。",
        retrieval={"ae_title": "BJCYPACS", "host": "pacs.example", "port": 104, "wado_rs": None})
    event = ResultPipeline(book, pseudonymizer).imaging_event(report, "dicom")
    assert event["item"]["unified_code"] == book.imaging_item("CT", "HEAD", "plain").code
    with database.begin() as conn:
        ingest(conn, [Delivery(event)])
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer,
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="g")
    client = TestClient(create_app(context), headers=principals.his("bj-chaoyang-002"))
    principals.encounter(event["patient"]["pseudonym"], "bj-chaoyang-002")
    answer = client.post("/api/v1/recognition/check", json={
        "patient": {"resident_id": resident_id}, "requesting_institution": "bj-chaoyang-002"}).json()
    [entry] = answer["results"]
    assert entry["result"]["kind"] == "imaging" and entry["result"]["ref"] == "bj-chaoyang-001/ACC-CT-1"
    assert entry["recognition"]["status"] == "recognizable" and entry["recognition"]["tier"] == "alliance"
    assert entry["report"] == {"findings": "脑实质未见异常密度影。", "impression": "颅脑CT平扫未见异常。"}
    assert entry["retrieval"]["ae_title"] == "BJCYPACS" and entry["study"]["modality"] == "CT"
    assert "values" not in entry

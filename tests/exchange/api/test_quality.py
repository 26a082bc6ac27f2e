"""Adding a mapping from the unmapped queue (new table version, code book reloaded, re-map job with progress) and
the dead-letter listing, on both stores."""
from __future__ import annotations

import csv
import io
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from kafka import TopicPartition
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from adapters.pipeline import ResultPipeline
from adapters.pseudonymize import Pseudonymizer
from adapters.report import Code, LabObservation, LabReport, Patient, Value
from codes import default_codes_dir, load_codebook
from exchange.api import Context, create_app
from exchange.store import Delivery, ingest, record_dead_letter
from exchange.store.models import AuditRecord, Observation, Result
from schemas.resident_id import make_resident_id
from schemas.topics import TOPIC_IMAGING, TOPIC_LAB
from tests.fakes import FakePublisher
from tests.fixtures.principals import Principals

ISSUER = "bj-chaoyang-001"
OTHER = "sh-xuhui-001"
AT = datetime(2026, 11, 20, 10, tzinfo=UTC)


@dataclass
class Desk:
    client: TestClient
    context: Context
    who: Principals
    codes: Path


def _lab(institution: str, result_id: str, code: str, value: float, unit: str) -> LabReport:
    return LabReport(institution=institution, result_id=result_id, version=1, status="final",
                     patient=Patient(make_resident_id("11010519800312002")), codes=[Code(code)],
                     observations=[LabObservation([Code(code)], Value("quantity", value, unit=unit))],
                     reported_at=AT)


@pytest.fixture
def desk(database: Engine, pseudonymizer, principals: Principals, tmp_path: Path) -> Iterator[Desk]:  # type: ignore[no-untyped-def]
    """An operator's own code directory (a copy of the shipped one) and three stored results of ISSUER whose
    local code NEWGLU no table maps."""
    codes = tmp_path / "codes"
    shutil.copytree(default_codes_dir(), codes)
    book = load_codebook(codes)
    pipeline = ResultPipeline(book, pseudonymizer)
    with database.begin() as conn:
        ingest(conn, [Delivery(pipeline.lab_event(_lab(ISSUER, f"Q{n}", "NEWGLU", 5.0 + n, "mmol/L"), "fhir"))
                      for n in range(3)])
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    with TestClient(create_app(context)) as client:
        yield Desk(client, context, principals, codes)


def _unified(database: Engine, local_code: str) -> list[str | None]:
    with database.connect() as conn:
        return list(conn.execute(select(Observation.unified_code).where(Observation.local_code == local_code)
                                 .order_by(Observation.result_pk)).scalars())


def test_a_mapping_from_the_queue_becomes_a_table_version_and_remaps_stored_results(desk: Desk) -> None:
    operator = desk.who.operator()
    queue = desk.client.get("/api/v1/unmapped-codes", params={"institution": ISSUER}, headers=operator).json()
    assert ("NEWGLU", 3) in [(c["local_code"], c["results"]) for g in queue["groups"] for c in g["codes"]]
    exported = desk.client.get("/api/v1/unmapped-codes", params={"institution": ISSUER, "format": "csv"},
                               headers=operator)
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert {(r["local_code"], r["results"], r["issuer_name"]) for r in rows} >= {
        ("NEWGLU", "3", desk.context.book.institutions[ISSUER].name_zh)}
    before = desk.context.book.mapping_version(ISSUER)
    response = desk.client.post("/api/v1/mappings", headers=operator, json={
        "institution": ISSUER, "local_code": "NEWGLU", "unified_code": "L0032", "local_name": "新葡萄糖",
        "note": "来自未映射队列"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["previous_version"] == before and body["version"] != before and body["table"] == "lab"
    assert desk.context.book.mapping_version(ISSUER) == body["version"]  # the running app uses it now
    written = desk.codes / "mappings" / ISSUER / f"{body['version']}.csv"
    old = (desk.codes / "mappings" / ISSUER / f"{before}.csv").read_text("utf-8")
    assert written.read_text("utf-8") == old + ",NEWGLU,,新葡萄糖,L0032,,,,来自未映射队列\n"
    assert response.headers["location"] == f"/api/v1/jobs/{body['job']['id']}"
    assert body["job"]["total"] >= 3
    desk.context.jobs.get(body["job"]["id"]).finished.wait(60)
    job = desk.client.get(f"/api/v1/jobs/{body['job']['id']}", headers=operator).json()
    assert job["state"] == "done" and job["done"] == job["total"] and job["errors"] == []
    assert job["result"]["changed"] == 3 and job["result"]["newly_mapped"] >= 3
    assert job["finished_at"].endswith("+08:00")
    assert _unified(desk.context.database, "NEWGLU") == ["L0032"] * 3
    with desk.context.database.connect() as conn:
        versions = set(conn.execute(select(Result.mapping_version).where(Result.issuer == ISSUER)).scalars())
        actions = list(conn.execute(select(AuditRecord.action)).scalars())
    assert versions == {body["version"]} and "mapping.add" in actions
    # two more at once: both jobs end with every result under the newest table
    made = [desk.client.post("/api/v1/mappings", headers=operator, json={
        "institution": ISSUER, "local_code": code, "unified_code": "L0001"}).json() for code in ("ALT-X", "ALT-Y")]
    for answer in made:
        desk.context.jobs.get(answer["job"]["id"]).finished.wait(60)
    with desk.context.database.connect() as conn:
        versions = set(conn.execute(select(Result.mapping_version).where(Result.issuer == ISSUER)).scalars())
    assert versions == {made[1]["version"]} == {desk.context.book.mapping_version(ISSUER)}
    queue = desk.client.get("/api/v1/unmapped-codes", params={"institution": ISSUER}, headers=operator).json()
    assert "NEWGLU" not in [c["local_code"] for g in queue["groups"] for c in g["codes"]]


BAD = [
    ({"unified_code": "L9999"}, 422, "unified_code"),
    ({"institution": "nowhere"}, 422, "institution"),
    ({"unified_code": "I0001", "factor": 2.0}, 422, "factor"),  # a study mapping converts no value
    ({"unified_code": "I0001", "local_system": "dicom", "local_code": "CT"}, 422, "local_code"),  # not a shape
    ({"local_code": "GLU"}, 409, "local_code"),  # the table maps GLU already
    ({"source_unit": "mg/dL"}, 422, "source_unit"),  # a unit other than the item's without a factor
    ({"source_unit": "furlongs"}, 422, "source_unit"),
    ({"local_code": "A\nB"}, 422, "local_code"),
]


def test_bad_mappings_are_refused_and_nothing_is_written(desk: Desk) -> None:
    folder = desk.codes / "mappings" / ISSUER
    before = sorted(p.name for p in folder.iterdir())
    version = desk.context.book.version
    for change, status, field in BAD:
        response = desk.client.post("/api/v1/mappings", headers=desk.who.operator(), json={
            "institution": ISSUER, "local_code": "NEWGLU", "unified_code": "L0032", **change})
        assert (response.status_code, response.json()["field"]) == (status, field), (change, response.text)
        assert sorted(p.name for p in folder.iterdir()) == before and desk.context.book.version == version


def test_an_unmapped_study_from_the_queue_is_mapped_in_the_imaging_table(desk: Desk, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    from adapters.report import ImagingReport, Study

    pipeline = ResultPipeline(desk.context.book, pseudonymizer)
    studies = [("S1", Study("1.2.840.99.11", "CT", body_part=None, technique="plain", description="胸部平扫"), []),
               ("S2", Study("1.2.840.99.12", "OT", body_part=None, technique="plain"), [Code("RIS-77", "RIS")])]
    with desk.context.database.begin() as conn:
        ingest(conn, [Delivery(pipeline.imaging_event(ImagingReport(
            institution="zj-hz-001", result_id=rid, version=1, status="final", codes=codes,
            patient=Patient(make_resident_id("11010519800312002")), study=study, reported_at=AT), "dicom"))
            for rid, study, codes in studies])
    operator = desk.who.operator()
    queue = desk.client.get("/api/v1/unmapped-codes", params={"institution": "zj-hz-001"}, headers=operator).json()
    shown = {(c["local_code"], c["local_system"]) for g in queue["groups"] for c in g["codes"]}
    assert {("CT/-/plain", "dicom"), ("RIS-77", "RIS")} <= shown
    before = desk.context.book.imaging_mapping_version("zj-hz-001")
    for local_code, system, item in (("CT/-/plain", "dicom", "I0013"), ("RIS-77", "RIS", "I0001")):
        made = desk.client.post("/api/v1/mappings", headers=operator, json={
            "institution": "zj-hz-001", "local_code": local_code, "local_system": system, "unified_code": item})
        assert made.status_code == 201, made.text
        desk.context.jobs.get(made.json()["job"]["id"]).finished.wait(60)
    assert desk.context.book.imaging_mapping_version("zj-hz-001") == made.json()["version"] != before
    assert made.json()["table"] == "imaging"
    with desk.context.database.connect() as conn:
        mapped = dict(conn.execute(select(Result.result_id, Result.unified_code)
                                   .where(Result.result_id.in_(["S1", "S2"]))).all())
    assert mapped == {"S1": "I0013", "S2": "I0001"}
    again = desk.client.post("/api/v1/mappings", headers=operator, json={
        "institution": "zj-hz-001", "local_code": "RIS-77", "local_system": "RIS", "unified_code": "I0002"})
    assert again.status_code == 409


def test_a_mapping_with_a_unit_factor_converts_the_stored_values(desk: Desk, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    with desk.context.database.begin() as conn:
        ingest(conn, [Delivery(ResultPipeline(desk.context.book, pseudonymizer).lab_event(
            _lab(ISSUER, "M1", "GLUMG", 90.0, "mg/dL"), "fhir"))])
    response = desk.client.post("/api/v1/mappings", headers=desk.who.operator(), json={
        "institution": ISSUER, "local_code": "GLUMG", "unified_code": "L0032", "source_unit": "mg/dL",
        "factor": 0.05551})
    assert response.status_code == 201, response.text
    desk.context.jobs.get(response.json()["job"]["id"]).finished.wait(60)
    with desk.context.database.connect() as conn:
        value, unit = conn.execute(select(Observation.value, Observation.unit)
                                   .where(Observation.local_code == "GLUMG")).one()
    assert (round(value, 3), unit) == (round(90.0 * 0.05551, 3), "mmol/L")


def test_the_shipped_demo_codes_are_not_edited(database: Engine, book, pseudonymizer, principals) -> None:  # type: ignore[no-untyped-def]
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    client = TestClient(create_app(context))
    response = client.post("/api/v1/mappings", headers=principals.operator(), json={
        "institution": ISSUER, "local_code": "NEWGLU", "unified_code": "L0032"})
    assert response.status_code == 409 and "HRX_CODES_DIR" in response.json()["error"]


def test_only_operators_inside_the_scope_add_mappings_and_follow_jobs(desk: Desk) -> None:
    payload = {"institution": ISSUER, "local_code": "NEWGLU", "unified_code": "L0032"}
    assert desk.client.post("/api/v1/mappings", headers=desk.who.auditor(), json=payload).status_code == 403
    assert desk.client.post("/api/v1/mappings", headers=desk.who.his(ISSUER), json=payload).status_code == 403
    shanghai = desk.who.operator(scope="31")
    assert desk.client.post("/api/v1/mappings", headers=shanghai, json=payload).status_code == 403
    made = desk.client.post("/api/v1/mappings", headers=desk.who.operator(scope="11"), json=payload)
    assert made.status_code == 201, made.text
    job = made.json()["job"]["id"]
    desk.context.jobs.get(job).finished.wait(60)
    assert desk.client.get(f"/api/v1/jobs/{job}", headers=shanghai).status_code == 403
    assert desk.client.get(f"/api/v1/jobs/{job}", headers=desk.who.auditor()).status_code == 403
    assert desk.client.get("/api/v1/jobs/nope", headers=desk.who.operator()).status_code == 404


def _letters(database: Engine) -> None:
    """Four dead letters, made by the engine itself: not JSON, a foreign key id, a conflicting version (its
    payload a formula), and an event missing its patient from OTHER."""
    from exchange.engine import KeyIds, ResultEngine
    from schemas import events
    from tests.fixtures.events import TEST_KEY_ID, lab_event

    engine = ResultEngine("127.0.0.1:9", database, "g", FakePublisher(), key_ids=KeyIds(TEST_KEY_ID))  # type: ignore[arg-type]

    def consume(topic: str, *values: bytes) -> None:
        records = [SimpleNamespace(topic=topic, partition=0, offset=consume.offset + n, value=v)  # type: ignore[attr-defined]
                   for n, v in enumerate(values)]
        consume.offset += len(values)  # type: ignore[attr-defined]
        engine.store(engine.prepare({TopicPartition(topic, 0): records}))  # type: ignore[arg-type]

    consume.offset = 1  # type: ignore[attr-defined]
    foreign = Pseudonymizer(b"another-exchange-key-0123456789").key_id
    stored = lab_event(issuer=ISSUER, result_id="X")
    consume(TOPIC_LAB, events.encode(stored))  # offset 1: stored
    consume(TOPIC_IMAGING, b"not json")  # 2
    consume(TOPIC_LAB, events.encode(lab_event(issuer=ISSUER, result_id="Y", key_id=foreign)))  # 3
    conflicting = {**stored, "event_id": str(uuid.uuid4()), "specimen": {"type": "SER", "id": "=cmd|' /C calc'!A0"}}
    consume(TOPIC_LAB, events.encode(conflicting))  # 4: another content under a stored version's key
    missing = lab_event(issuer=OTHER, result_id="Z")
    del missing["patient"]
    consume(TOPIC_LAB, events.encode(missing))  # 5


def test_dead_letters_with_their_reasons_filters_and_pages(desk: Desk) -> None:
    _letters(desk.context.database)
    operator = desk.who.operator()
    body = desk.client.get("/api/v1/dead-letters", headers=operator).json()
    assert [(d["offset"], d["reason"], d["institution"]) for d in body["letters"]] == [
        (5, "invalid_event", OTHER), (4, "conflict", ISSUER), (3, "unknown_key", ISSUER), (2, "invalid_event", None)]
    assert body["next_before"] is None and body["letters"][0]["failed_at"].endswith("+08:00")
    by_reason = desk.client.get("/api/v1/dead-letters", params={"reason": "invalid_event"}, headers=operator).json()
    assert [d["offset"] for d in by_reason["letters"]] == [5, 2]
    imaging = desk.client.get("/api/v1/dead-letters", params={"topic": TOPIC_IMAGING}, headers=operator)
    assert [d["offset"] for d in imaging.json()["letters"]] == [2]
    first = desk.client.get("/api/v1/dead-letters", params={"limit": 3}, headers=operator).json()
    assert len(first["letters"]) == 3 and first["next_before"] == first["letters"][-1]["id"]
    rest = desk.client.get("/api/v1/dead-letters", params={"limit": 3, "before": first["next_before"]},
                           headers=operator).json()
    assert [d["offset"] for d in rest["letters"]] == [2] and rest["next_before"] is None
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert desk.client.get("/api/v1/dead-letters", params={"from": later}, headers=operator).json()["letters"] == []
    # a Beijing operator sees the letters whose payload names a Beijing issuer
    beijing = desk.client.get("/api/v1/dead-letters", headers=desk.who.operator(scope="11")).json()
    assert [d["offset"] for d in beijing["letters"]] == [4, 3]
    with desk.context.database.connect() as conn:
        reads = list(conn.execute(select(AuditRecord.detail).where(AuditRecord.action == "dead_letters.read"))
                     .scalars())
    assert len(reads) == 7
    assert desk.client.get("/api/v1/dead-letters", headers=desk.who.auditor()).status_code == 403
    assert desk.client.get("/api/v1/dead-letters", params={"reason": "nope"}, headers=operator).status_code == 422


def test_dead_letters_as_csv_and_excel(desk: Desk) -> None:
    from openpyxl import load_workbook

    _letters(desk.context.database)
    operator = desk.who.operator()
    response = desk.client.get("/api/v1/dead-letters", params={"format": "csv"}, headers=operator)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [r["offset"] for r in rows] == ["5", "4", "3", "2"]
    assert rows[3]["payload"] == "not json"  # as it came
    assert "=cmd|" in rows[1]["payload"]
    excel = desk.client.get("/api/v1/dead-letters", headers={**operator, "Accept": "application/vnd.openxmlformats-"
                                                               "officedocument.spreadsheetml.sheet"})
    sheet = load_workbook(io.BytesIO(excel.content)).active
    values = list(sheet.values)
    assert values[0][:3] == ("id", "failed_at", "topic") and [v[4] for v in values[1:]] == [5, 4, 3, 2]
    assert sheet.cell(row=5, column=9).value == "not json"


def test_feedback_per_issuer_with_the_oldest_unresolved(desk: Desk) -> None:
    from exchange.store.models import Feedback

    now = datetime.now(UTC)

    def ticket(issuer: str, status: str, days: int) -> dict[str, object]:
        return {"feedback_id": str(uuid.uuid4()), "result_issuer": issuer, "result_id": "R", "result_version": 1,
                "patient": "a" * 64, "kind": "report_problem", "note": "单位错误", "reporter_institution": "x",
                "reporter_id": None, "status": status, "created_at": now - timedelta(days=days, hours=1),
                "updated_at": now, "published_at": now}

    with desk.context.database.begin() as conn:
        conn.execute(insert(Feedback), [ticket(ISSUER, "open", 2), ticket(ISSUER, "resolved", 9),
                                        ticket(ISSUER, "open", 0), ticket(OTHER, "acknowledged", 5),
                                        ticket("bj-xicheng-001", "resolved", 1)])
    body = desk.client.get("/api/v1/feedback-summary", headers=desk.who.operator()).json()
    assert [(r["issuer"], r["open"], r["acknowledged"], r["resolved"], r["oldest_unresolved_days"])
            for r in body["issuers"]] == [(OTHER, 0, 1, 0, 5), (ISSUER, 2, 0, 1, 2), ("bj-xicheng-001", 0, 0, 1, None)]
    assert body["issuers"][0]["oldest_unresolved_at"].endswith("+08:00")
    beijing = desk.client.get("/api/v1/feedback-summary", headers=desk.who.operator(scope="11")).json()
    assert [r["issuer"] for r in beijing["issuers"]] == [ISSUER, "bj-xicheng-001"]
    exported = desk.client.get("/api/v1/feedback-summary", params={"format": "xlsx"}, headers=desk.who.operator())
    assert exported.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert desk.client.get("/api/v1/feedback-summary", params={"scope": "31"},
                           headers=desk.who.operator(scope="11")).status_code == 403


def _text(value: object) -> str:
    """A JSON value as the CSV writes it (no formula-like text in these rows)."""
    return "" if value is None else ("true" if value else "false") if isinstance(value, bool) else str(value)


def test_one_issuers_feedback_as_csv_and_excel_with_the_rows_of_the_json_answer(desk: Desk) -> None:
    from openpyxl import load_workbook

    from exchange.store.models import Feedback

    now = datetime.now(UTC)
    columns = ["feedback_id", "result_ref", "result_version", "kind", "status", "age_days", "created_at",
               "updated_at", "reporter_institution", "reporter_id", "note", "published"]
    with desk.context.database.begin() as conn:
        conn.execute(insert(Feedback), [
            {"feedback_id": str(uuid.uuid4()), "result_issuer": issuer, "result_id": f"R{days}", "result_version": 2,
             "patient": "a" * 64, "kind": kind, "note": note, "reporter_institution": OTHER, "reporter_id": reporter,
             "status": status, "created_at": now - timedelta(days=days, hours=1), "updated_at": now,
             "published_at": now}  # published: the outbox relay would change an unpublished one between reads
            for issuer, kind, note, reporter, status, days in (
                (ISSUER, "report_problem", "单位错误", "dr-li", "open", 3),
                (ISSUER, "image_problem", "图像缺失，见附件", None, "resolved", 12),
                (ISSUER, "report_problem", "参考范围有误", "dr-zhao", "acknowledged", 0),
                (OTHER, "report_problem", "another issuer's", None, "open", 1))])
    operator = desk.who.operator(scope="11")
    body = desk.client.get("/api/v1/feedback", params={"issuer": ISSUER}, headers=operator).json()
    assert [(f["status"], f["age_days"]) for f in body["feedback"]] == [("acknowledged", 0), ("open", 3),
                                                                        ("resolved", 12)]  # newest first
    expected = [{**f, "result_ref": f["result"]["ref"], "result_version": f["result"]["version"]}
                for f in body["feedback"]]
    assert expected[1]["result_ref"] == f"{ISSUER}/R3" and expected[1]["result_version"] == 2

    as_csv = desk.client.get("/api/v1/feedback", params={"issuer": ISSUER, "format": "csv"}, headers=operator)
    assert as_csv.status_code == 200 and as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert as_csv.headers["content-disposition"] == f'attachment; filename="feedback-{ISSUER}.csv"'
    reader = csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig")))
    assert next(reader) == columns
    assert list(reader) == [[_text(f[c]) for c in columns] for f in expected]

    as_xlsx = desk.client.get("/api/v1/feedback", params={"issuer": ISSUER, "format": "xlsx"}, headers=operator)
    assert as_xlsx.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    values = list(load_workbook(io.BytesIO(as_xlsx.content)).active.values)
    assert values[0] == tuple(columns)
    assert values[1:] == [tuple(f[c] for c in columns) for f in expected]  # numbers and booleans stay themselves

    opened = desk.client.get("/api/v1/feedback", params={"issuer": ISSUER, "status": "open", "format": "csv"},
                             headers=operator)
    assert [r["status"] for r in csv.DictReader(io.StringIO(opened.content.decode("utf-8-sig")))] == ["open"]
    assert desk.client.get("/api/v1/feedback", params={"issuer": OTHER, "format": "csv"},
                           headers=operator).status_code == 403  # Shanghai: outside a Beijing operator's scope

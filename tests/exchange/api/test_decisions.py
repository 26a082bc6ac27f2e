"""Decisions, feedback, the patient timeline, statistics and the audit trail (both stores, real broker)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer

from adapters.report import Code, LabObservation, LabReport, Patient, Value

from adapters.pipeline import ResultPipeline
from exchange.api import Context, create_app
from schemas.topics import TOPIC_DECISIONS, TOPIC_FEEDBACK
from schemas.resident_id import make_resident_id
from adapters.publish import Publisher
from exchange.store import Delivery, ingest
from tests.fixtures.waiting import wait_for

RESIDENT_ID = make_resident_id("11010519800312002")
REQUESTER = "bj-chaoyang-001"
ISSUER = "bj-xicheng-001"


def _report(result_id: str, observations: list[tuple[str, float, str]], status: str = "final",
            hours_ago: int = 24) -> LabReport:
    return LabReport(
        institution=ISSUER, result_id=result_id, version=2, status=status, patient=Patient(RESIDENT_ID),
        codes=[Code(observations[0][0])],
        observations=[LabObservation([Code(code)], Value("quantity", value, unit=unit)) for code, value, unit in observations],
        reported_at=datetime.now(UTC) - timedelta(hours=hours_ago))


@pytest.fixture
def api(book, database, broker, pseudonymizer, principals) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The API over a store holding three results of one patient from one Beijing hospital, the patient in an
    open encounter at the requester; ``his``: the requester's HIS acting for dr-wang, ``issuer``: the issuer's
    HIS, ``operator`` and ``auditor`` national ones."""
    pipeline = ResultPipeline(book, pseudonymizer)
    events = [pipeline.lab_event(r, "fhir") for r in (
        _report("R1", [("BJXCGLU", 99.0, "mg/dL"), ("BJXCK", 4.1, "mmol/L")]),
        _report("R2", [("BJXCALT", 30.0, "U/L")]),
        _report("R3", [("BJXCAST", 25.0, "U/L")], status="preliminary"))]
    with database.begin() as conn:
        ingest(conn, [Delivery(e) for e in events])
    publisher = Publisher(broker.bootstrap, timeout_s=5)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=publisher,
                      bootstrap=broker.bootstrap, engine_group="hrx-engine")
    with TestClient(create_app(context)) as client:
        client.pseudonym = events[0]["patient"]["pseudonym"]  # type: ignore[attr-defined]
        principals.encounter(client.pseudonym, REQUESTER)  # type: ignore[attr-defined]
        client.his = principals.his(REQUESTER, "dr-wang")  # type: ignore[attr-defined]
        client.issuer = principals.his(ISSUER, "dr-li")  # type: ignore[attr-defined]
        client.operator = principals.operator()  # type: ignore[attr-defined]
        client.auditor = principals.auditor()  # type: ignore[attr-defined]
        yield client
    publisher.close()


def _check(api: TestClient, encounter: str = "E1") -> dict:  # type: ignore[type-arg]
    response = api.post("/api/v1/recognition/check", headers=api.his, json={
        "patient": {"resident_id": RESIDENT_ID}, "requesting_institution": REQUESTER, "encounter_id": encounter})
    assert response.status_code == 200, response.text
    return response.json()


def _decide(api: TestClient, ref: str, decision: str, item: str | None = None, **extra: object):  # type: ignore[no-untyped-def]
    body = {"result_id": ref, "requesting_institution": REQUESTER, "clinician_id": "dr-wang", "encounter_id": "E1",
            "trigger": "encounter", "decision": decision, "item": item, **extra}
    return api.post("/api/v1/decisions", json=body, headers=api.his)


def _stats(api: TestClient) -> dict:  # type: ignore[type-arg]
    now = datetime.now(UTC)
    response = api.get("/api/v1/stats", params={"scope": "11", "from": (now - timedelta(hours=1)).isoformat(),
                                                "to": (now + timedelta(hours=1)).isoformat()}, headers=api.operator)
    assert response.status_code == 200, response.text
    return response.json()


def test_decision_arithmetic(api, book) -> None:  # type: ignore[no-untyped-def]
    answer = _check(api)
    statuses = {(e["result"]["result_id"], e["item"]["code"]): e["recognition"]["status"] for e in answer["results"]}
    assert statuses == {("R1", "L0032"): "recognizable", ("R1", "L0045"): "recognizable",
                        ("R2", "L0001"): "recognizable", ("R3", "L0002"): "not_final"}
    _check(api)  # the same encounter again: presentations are counted once
    assert _decide(api, f"{ISSUER}/R1", "accept", "L0032").status_code == 201
    assert _decide(api, f"{ISSUER}/R1", "reject", "L0045", reason_code="01").status_code == 201
    assert _decide(api, f"{ISSUER}/R2", "reject", reason_code="99").status_code == 201
    stats = _stats(api)
    price = float(book.price("L0032", "11"))
    assert (stats["presented"], stats["accepted"], stats["rejected"]) == (3, 1, 2)
    assert stats["excluded_from_denominator"] == 1
    assert stats["recognition_rate"] == 0.5  # 1 / (3 − 1)
    assert stats["avoided_cost_cny"] == price and price > 0
    assert stats["rejected_by_reason"]["99"]["counts_as_non_recognition"] is False
    assert stats["per_issuer"][ISSUER] == {"presented": 3, "accepted": 1, "rejected": 2}
    # revoke undoes the last decision on that subject
    assert _decide(api, f"{ISSUER}/R1", "revoke", "L0032").status_code == 201
    after = _stats(api)
    assert (after["accepted"], after["recognition_rate"], after["avoided_cost_cny"]) == (0, 0.0, 0.0)
    again = _decide(api, f"{ISSUER}/R1", "revoke", "L0032")
    assert again.status_code == 409 and again.json()["field"] == "decision"
    assert _stats(api)["requesting_institutions"] > 1
    outside = api.get("/api/v1/stats", params={"scope": "33"}, headers=api.operator).json()
    assert (outside["presented"], outside["accepted"]) == (0, 0)


@pytest.mark.parametrize("extra, field", [
    ({"decision": "reject"}, "reason_code"),
    ({"decision": "reject", "reason_code": "42"}, "reason_code"),
    ({"decision": "reject", "reason_code": "08"}, "note"),
    ({"decision": "reject", "reason_code": "08", "note": "长" * 201}, "note"),
    ({"decision": "accept", "reason_code": "01"}, "reason_code"),
    ({"decision": "accept", "result_id": f"{ISSUER}/R3"}, "result_id"),
    ({"decision": "accept", "result_id": f"{ISSUER}/NOPE"}, "result_id"),
    ({"decision": "accept", "item": "L0099"}, "item"),
    ({"decision": "accept", "requesting_institution": "nowhere"}, "requesting_institution"),
    ({"decision": "maybe"}, "decision"),
])
def test_decision_errors_name_the_field(api, extra, field) -> None:  # type: ignore[no-untyped-def]
    body = {"result_id": f"{ISSUER}/R1", "requesting_institution": REQUESTER, "clinician_id": "dr-wang",
            "encounter_id": "E1", "trigger": "encounter", **extra}
    response = api.post("/api/v1/decisions", json=body, headers=api.his)
    assert 400 <= response.status_code < 500
    assert response.json()["error"].startswith(field), response.json()


def test_reason_08_with_a_note_is_accepted(api) -> None:  # type: ignore[no-untyped-def]
    response = _decide(api, f"{ISSUER}/R2", "reject", reason_code="08", note="术前需复查")
    assert response.status_code == 201 and response.json()["note"] == "术前需复查"


def test_batch_accepts_every_recognizable_result_of_a_source_hospital(api, broker) -> None:  # type: ignore[no-untyped-def]
    response = api.post("/api/v1/decisions/batch", headers=api.his, json={
        "patient": {"resident_id": RESIDENT_ID}, "issuer": ISSUER, "requesting_institution": REQUESTER,
        "clinician_id": "dr-wang", "encounter_id": "E2", "trigger": "encounter", "decision": "accept"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["decided"] == 3  # R1 glucose and potassium, R2 ALT; R3 is preliminary
    ids = {d["decision_id"] for d in body["decisions"]}
    consumer = KafkaConsumer(TOPIC_DECISIONS, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000)
    seen: set[str] = set()

    def published() -> bool:
        seen.update(orjson.loads(m.value)["decision_id"] for m in consumer)
        return ids <= seen

    wait_for(published, timeout=30)
    consumer.close()


def test_feedback_reaches_the_issuer(api, broker) -> None:  # type: ignore[no-untyped-def]
    response = api.post("/api/v1/feedback", json={"result_id": f"{ISSUER}/R1", "kind": "report_problem",
                                                   "note": "单位疑似错误", "reporter_institution": REQUESTER}, headers=api.his)
    assert response.status_code == 201, response.text
    feedback_id = response.json()["feedback_id"]
    listed = api.get("/api/v1/feedback", params={"issuer": ISSUER, "status": "open"}, headers=api.issuer).json()["feedback"]
    assert [f["feedback_id"] for f in listed] == [feedback_id]
    done = api.post(f"/api/v1/feedback/{feedback_id}/status", json={"status": "acknowledged"}, headers=api.issuer)
    assert done.json()["status"] == "acknowledged"
    assert api.get("/api/v1/feedback", params={"issuer": ISSUER, "status": "open"}, headers=api.issuer).json()["feedback"] == []
    assert api.get("/api/v1/feedback", params={"issuer": "nowhere"}, headers=api.issuer).status_code == 422
    assert api.post("/api/v1/feedback/nope/status", json={"status": "resolved"}, headers=api.issuer).status_code == 404
    consumer = KafkaConsumer(TOPIC_FEEDBACK, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000)
    statuses: list[str] = []

    def published() -> bool:
        statuses.extend(orjson.loads(m.value)["status"] for m in consumer)
        return "acknowledged" in statuses

    wait_for(published, timeout=30)
    consumer.close()


def test_timeline_filters_and_series(api) -> None:  # type: ignore[no-untyped-def]
    url = f"/api/v1/patients/{api.pseudonym}/results"
    everything = api.get(url, headers=api.his).json()
    assert {r["ref"] for r in everything["results"]} == {f"{ISSUER}/R1", f"{ISSUER}/R2", f"{ISSUER}/R3"}
    glucose = api.get(url, params={"item": "L0032"}, headers=api.his).json()
    assert [r["ref"] for r in glucose["results"]] == [f"{ISSUER}/R1"]
    assert list(glucose["series"]) == ["L0032"] and glucose["series"]["L0032"][0]["unit"] == "mmol/L"
    assert len(api.get(url, params={"category": "biochemistry"}, headers=api.his).json()["results"]) == 3
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert api.get(url, params={"date_from": tomorrow}, headers=api.his).json()["results"] == []
    assert api.get(url, params={"item": "ZZZ"}, headers=api.his).json()["error"].startswith("item")
    assert api.get(url, params={"category": "astrology"}, headers=api.his).status_code == 422


def test_every_read_is_audited(api) -> None:  # type: ignore[no-untyped-def]
    _check(api)
    api.get(f"/api/v1/patients/{api.pseudonym}/results", headers=api.his)
    trail = api.get("/api/v1/audit", params={"patient": api.pseudonym}, headers=api.auditor).json()["records"]
    actions = [(r["action"], r["actor"], r["institution"], r["purpose"]) for r in trail]
    assert actions[0] == ("patient.results", f"his-{REQUESTER}", REQUESTER, "treatment")
    assert actions[1] == ("recognition.check", f"his-{REQUESTER}", REQUESTER, "treatment")
    assert RESIDENT_ID not in str(trail)
    newest = api.get("/api/v1/audit", params={"patient": api.pseudonym}, headers=api.auditor).json()["records"][0]
    assert (newest["action"], newest["actor"]) == ("audit.read", "auditor-national")
    refused = api.get("/api/v1/audit", params={"patient": api.pseudonym}, headers=api.his)
    assert refused.status_code == 403  # a HIS may not read the audit, whatever it claims


def test_a_status_change_during_a_relay_is_not_lost(api, database) -> None:  # type: ignore[no-untyped-def]
    """The relay read the row, the issuer changed its status, then the relay marks what it published."""
    from sqlalchemy import select, update
    from sqlalchemy.orm import Session

    from exchange import outbox
    from exchange.store.models import Feedback

    created = api.post("/api/v1/feedback", json={"result_id": f"{ISSUER}/R1", "kind": "image_problem",
                                                  "note": "影像缺失", "reporter_institution": REQUESTER}, headers=api.his).json()
    context = api.app.state.context
    wait_for(lambda: outbox.relay(context.database, context.publisher) == 0)
    real_publish = context.publisher.publish

    def publish_then_change(records):  # type: ignore[no-untyped-def]
        real_publish(records)
        with database.begin() as conn:  # the issuer acknowledges while the relay is between publish and mark
            conn.execute(update(Feedback).where(Feedback.feedback_id == created["feedback_id"]).values(
                status="acknowledged", updated_at=datetime.now(UTC), published_at=None))

    with database.begin() as conn:
        conn.execute(update(Feedback).values(published_at=None))
    context.publisher.publish = publish_then_change
    try:
        outbox.relay(context.database, context.publisher)
    finally:
        context.publisher.publish = real_publish
    # Whichever relay runs next (this one or the app's background loop), the acknowledgement reaches Kafka.
    outbox.relay(context.database, context.publisher)
    consumer = KafkaConsumer(TOPIC_FEEDBACK, bootstrap_servers=context.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000)
    seen: list[tuple[str, str]] = []

    def acknowledged() -> bool:
        seen.extend((e["feedback_id"], e["status"]) for e in (orjson.loads(m.value) for m in consumer))
        return (created["feedback_id"], "acknowledged") in seen

    wait_for(acknowledged, timeout=30)
    consumer.close()
    with database.connect() as conn:
        assert Session(conn).scalars(select(Feedback)).one().status == "acknowledged"

"""GET /metrics and the health probes: what the doors, the access rules and the store add to the metrics, that
no metric names a patient, and liveness and readiness apart (readiness naming what is missing)."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exchange.api import Context, create_app
from exchange.auth import accounts
from exchange.store import connect
from tests.fakes import FakePublisher
from tests.fixtures.principals import Principals

BUNDLE_TEXT = (Path(__file__).parents[2] / "data/fhir/lab-bundle.json").read_text("utf-8")
BUNDLE = json.loads(BUNDLE_TEXT)
ISSUER = "bj-xicheng-001"
RESIDENT_ID = "110105198003120024"


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def api(book, database, pseudonymizer, principals) -> Iterator[tuple[TestClient, FakePublisher]]:  # type: ignore[no-untyped-def]
    publisher = FakePublisher()
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=publisher,  # type: ignore[arg-type]
                      bootstrap="127.0.0.1:9", engine_group="hrx-engine")
    with TestClient(create_app(context)) as client:
        yield client, publisher


def test_the_fhir_door_access_and_logins_are_counted_without_patient_data(
        api: tuple[TestClient, FakePublisher], principals: Principals) -> None:
    client, publisher = api
    source = principals.source(ISSUER)
    before = samples(client)
    assert client.post("/fhir", headers=source, json=BUNDLE).status_code == 200
    publisher.down = True
    assert client.post("/fhir", headers=source, json=BUNDLE).status_code == 503
    assert client.post("/fhir", json=BUNDLE).status_code == 401
    secret = accounts.add_client(principals.database, "metrics-test", "his", ISSUER, "metrics test")
    assert client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": "metrics-test",
                                                   "client_secret": "wrong"}).status_code == 401
    assert client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": "metrics-test",
                                                   "client_secret": secret}).status_code == 200
    after = samples(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    reports = len([e for e in BUNDLE["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"])
    assert grew("hrx_door_answers_total", door="fhir", answer="200") == 1
    assert grew("hrx_door_answers_total", door="fhir", answer="503") == 1
    assert grew("hrx_door_answers_total", door="fhir", answer="401") == 1
    assert grew("hrx_door_results_received_total", door="fhir") == 2 * reports  # both authenticated posts
    assert grew("hrx_door_results_acknowledged_total", door="fhir") == reports  # only the first was acked
    assert grew("hrx_publish_failures_total", door="fhir") == 1
    assert grew("hrx_publish_seconds_count", door="fhir") == 1
    assert grew("hrx_access_refusals_total", status="401") == 1
    assert grew("hrx_logins_total", grant="client_credentials", outcome="refused") == 1
    assert grew("hrx_logins_total", grant="client_credentials", outcome="ok") == 1
    assert grew("hrx_http_requests_total", route="/fhir", method="POST", status="200") == 1
    assert value(after, "hrx_store_up") == 1
    assert ("hrx_outbox_backlog", (("kind", "decision"),)) in after
    assert ("hrx_dead_letters_stored", ()) in after

    text = client.get("/metrics").text
    pseudonym = publisher.records[0].key
    for secret_text in (RESIDENT_ID, pseudonym, ISSUER, "metrics-test"):
        assert secret_text not in text
    ids = [e["resource"]["identifier"][0]["value"] for e in BUNDLE["entry"]
           if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert ids and not any(i in text for i in ids)


def test_liveness_asks_nothing_and_readiness_names_what_is_missing(api: tuple[TestClient, FakePublisher]) -> None:
    client, _ = api
    assert client.get("/api/v1/health/live").json() == {"status": "ok"}
    ready = client.get("/api/v1/health/ready")
    assert ready.status_code == 503  # nothing listens on 127.0.0.1:9
    body = ready.json()
    assert body["status"] == "not ready" and body["store"] and body["migrations"] and body["pseudonym_key"]
    assert not body["broker"] and [m.split(":")[0] for m in body["missing"]] == ["broker"]


@pytest.mark.integration  # a listening socket stands for the broker the probe connects to
def test_readiness_with_a_listening_broker_and_an_unmigrated_store(book, pseudonymizer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    listening = socket.create_server(("127.0.0.1", 0))
    bootstrap = f"127.0.0.1:{listening.getsockname()[1]}"
    try:
        fresh = connect(f"sqlite:///{tmp_path / 'empty.db'}")  # no migration run
        context = Context(book=book, database=fresh, pseudonymizer=pseudonymizer, publisher=FakePublisher(),  # type: ignore[arg-type]
                          bootstrap=bootstrap, engine_group="hrx-engine")
        with TestClient(create_app(context)) as client:
            body = client.get("/api/v1/health/ready").json()
        assert body["broker"] and body["store"] and not body["migrations"]
        assert len(body["missing"]) == 1 and "has no schema yet (never migrated)" in body["missing"][0]
        assert "hrx migrate" in body["missing"][0]
    finally:
        listening.close()


def test_health_reports_backlog_version_and_commit(api: tuple[TestClient, FakePublisher]) -> None:
    client, _ = api
    body = client.get("/api/v1/health").json()
    assert body["backlog"] == {"outbox": 0, "dead_letters": 0}
    assert body["version"] and body["commit"]
    assert body["pseudonym"]["key_id"]


def test_the_request_id_is_answered_and_names_a_bundle_without_an_identifier(
        api: tuple[TestClient, FakePublisher], principals: Principals) -> None:
    client, publisher = api
    source = principals.source(ISSUER)
    given = client.post("/fhir", headers={**source, "X-Request-ID": "his-req-0042"}, json=BUNDLE)
    assert given.status_code == 200 and given.headers["X-Request-ID"] == "his-req-0042"
    assert {json.loads(r.value)["source"]["message_id"] for r in publisher.records} == {"BJXC-TEST-1-v0"}  # its own
    publisher.records.clear()
    anonymous = {k: v for k, v in BUNDLE.items() if k != "identifier"}
    made = client.post("/fhir", headers={**source, "X-Request-ID": "not a token; " + RESIDENT_ID}, json=anonymous)
    rid = made.headers["X-Request-ID"]
    assert made.status_code == 200 and len(rid) == 32 and RESIDENT_ID not in rid  # replaced, not echoed
    assert {json.loads(r.value)["source"]["message_id"] for r in publisher.records} == {rid}
    assert client.get("/api/v1/health/live").headers["X-Request-ID"]  # every answer carries one

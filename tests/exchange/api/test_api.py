"""End to end: a Bundle through POST /fhir → Kafka → engine → store → the check endpoint (both stores)."""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from exchange.api import Context, create_app
from adapters.publish import Publisher
from exchange.store.models import Result
from adapters.pseudonymize import Pseudonymizer
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.waiting import wait_for

BUNDLE = json.loads((Path(__file__).parents[2] / "data/fhir/lab-bundle.json").read_text("utf-8"))
RESIDENT_ID = "110105198003120024"
AT = "2026-11-21T10:00:00+08:00"


@pytest.fixture
def api(book, database, broker, pseudonymizer, principals) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The API alone (no engine consuming): for what is answered before anything reaches the store. ``source``:
    the headers of the Bundle issuer's source client; ``his``: those of the checking hospital's HIS."""
    publisher = Publisher(broker.bootstrap, timeout_s=3)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=publisher,
                      bootstrap=broker.bootstrap, engine_group="hrx-engine")
    with TestClient(create_app(context)) as test_client:
        test_client.source = principals.source("bj-xicheng-001")  # type: ignore[attr-defined]
        test_client.his = principals.his("bj-chaoyang-001")  # type: ignore[attr-defined]
        yield test_client
    publisher.close()


@pytest.fixture
def client(api, engine_thread) -> TestClient:  # type: ignore[no-untyped-def]
    """The API with an engine consuming into the same store."""
    api.app.state.context.engine_group = engine_thread.group
    return api


def _check(client: TestClient, **overrides: object) -> dict:  # type: ignore[type-arg]
    body = {"patient": {"resident_id": RESIDENT_ID}, "requesting_institution": "bj-chaoyang-001", "at": AT,
            "encounter_id": "E-api"}
    body.update(overrides)
    response = client.post("/api/v1/recognition/check", json=body, headers=client.his)
    assert response.status_code == 200, response.text
    return response.json()


def _stored(database) -> int:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return conn.execute(select(func.count()).select_from(Result)).scalar_one()


def test_bundle_to_answer(client, database) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/fhir", content=json.dumps(BUNDLE), headers={**client.source, "Content-Type": "application/fhir+json"})
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "transaction-response"
    answer = wait_for(lambda: _check(client)["results"] and _check(client))
    assert answer["complete"] is True and answer["trigger"] == "encounter"
    by_item = {e["item"]["code"]: e for e in answer["results"]}
    assert set(by_item) == {"L0032", "L0045"}
    glucose = by_item["L0032"]
    assert glucose["result"]["issuer"] == "bj-xicheng-001"
    assert glucose["values"][0]["unit"] == "mmol/L"
    assert glucose["recognition"]["status"] == "recognizable", glucose["recognition"]
    assert glucose["recognition"]["valid_until"] and glucose["recognition"]["catalogue_id"]
    assert all(e["recognition"]["reasons"] for e in answer["results"])
    # Resending the same Bundle creates nothing new.
    assert client.post("/fhir", json=BUNDLE, headers=client.source).status_code == 200
    wait_for(lambda: engine_idle(client))
    assert _stored(database) == 1


def engine_idle(client: TestClient) -> bool:
    health = client.get("/api/v1/health").json()
    return health["status"] == "ok" and health["consumer"]["total_lag"] == 0


def test_order_time_check_picks_the_best_prior(client) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/fhir", json=BUNDLE, headers=client.source).status_code == 200
    wait_for(lambda: _check(client)["results"])
    answer = _check(client, items=["L0032", "L0001"])
    assert answer["trigger"] == "order"
    glucose, alt = answer["results"]
    assert glucose["item"] == "L0032" and glucose["recognizable"] and glucose["best"]["result"]["result_id"] == "BJXC-TEST-1"
    assert glucose["others"] == []  # the best prior is not listed again among the others
    assert alt == {"item": "L0001", "recognizable": False, "best": None, "others": []}


def test_a_correction_replaces_what_the_check_shows(client) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/fhir", json=BUNDLE, headers=client.source).status_code == 200
    corrected = copy.deepcopy(BUNDLE)
    for entry in corrected["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "DiagnosticReport":
            resource["status"], resource["meta"] = "corrected", {"versionId": "3"}
        if resource["resourceType"] == "Observation" and resource["code"]["coding"][0]["code"] == "BJXCGLU":
            resource["valueQuantity"]["value"] = 120
    assert client.post("/fhir", json=corrected, headers=client.source).status_code == 200

    def corrected_shown() -> dict | None:  # type: ignore[type-arg]
        results = _check(client)["results"]
        return results if results and results[0]["result"]["version"] == 3 else None

    results = wait_for(corrected_shown)
    glucose = next(e for e in results if e["item"]["code"] == "L0032")
    assert glucose["result"]["status"] == "corrected"
    assert glucose["values"][0]["value"] == pytest.approx(120 * 0.05551)
    # The stale original, resent after the correction, never comes back.
    assert client.post("/fhir", json=BUNDLE, headers=client.source).status_code == 200
    wait_for(lambda: engine_idle(client))
    assert {e["result"]["version"] for e in _check(client)["results"]} == {3}


@pytest.mark.parametrize("body, field", [
    ({"patient": {"resident_id": "110105198003120021"}, "requesting_institution": "bj-chaoyang-001"},
     "patient.resident_id"),
    ({"patient": {"resident_id": RESIDENT_ID}, "requesting_institution": "nowhere"}, "requesting_institution"),
    ({"patient": {"resident_id": RESIDENT_ID}, "requesting_institution": "bj-chaoyang-001", "items": ["L0001", "ZZZ"]},
     "items[1]"),
    ({"patient": {}, "requesting_institution": "bj-chaoyang-001"}, "patient"),
    ({"patient": {"pseudonym": "abc"}, "requesting_institution": "bj-chaoyang-001"}, "patient.pseudonym"),
    ({"patient": {"resident_id": RESIDENT_ID}, "requesting_institution": "bj-chaoyang-001", "at": "2026-11-21T10:00"},
     "at"),
])
def test_check_errors_name_the_field(api, body, field) -> None:  # type: ignore[no-untyped-def]
    response = api.post("/api/v1/recognition/check", json=body, headers=api.his)
    assert response.status_code == 422
    assert response.json()["error"].startswith(field), response.json()
    assert "110105198003120021" not in response.text


def test_invalid_bundle_gets_an_operation_outcome(api) -> None:  # type: ignore[no-untyped-def]
    response = api.post("/fhir", content=b"{not json", headers={**api.source, "Content-Type": "application/fhir+json"})
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"
    bad = copy.deepcopy(BUNDLE)
    bad["type"] = "searchset"
    response = api.post("/fhir", json=bad, headers=api.source)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Bundle.type"]


def test_health_reports_broker_store_and_lag(api) -> None:  # type: ignore[no-untyped-def]
    health = api.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["store"]["ok"] and health["broker"]["ok"]
    assert set(health["consumer"]["lag"]) == {"hr.results.lab.v1", "hr.results.imaging.v1"}
    assert health["pseudonym"] == {"key_id": Pseudonymizer(TEST_KEY).key_id}  # what every adapter must carry


def test_broker_down_means_503_and_nothing_accepted(api, broker, database) -> None:  # type: ignore[no-untyped-def]
    broker.stop()
    response = api.post("/fhir", json=BUNDLE, headers=api.source)
    assert response.status_code == 503
    assert response.json()["issue"][0]["code"] == "transient"
    assert api.get("/api/v1/health").status_code == 503
    assert _stored(database) == 0


def test_the_collector_is_tuned_only_while_the_api_runs(book, database, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    import gc

    from exchange import collector

    before = gc.get_threshold()
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer,
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="hrx-engine")
    with TestClient(create_app(context)):
        assert gc.get_threshold() == collector.THRESHOLDS  # no collections for a long check's short-lived containers
    assert gc.get_threshold() == before


def test_a_check_whose_audit_write_fails_shows_nothing_and_records_nothing(book, database, pseudonymizer,
                                                                           monkeypatch, principals) -> None:  # type: ignore[no-untyped-def]
    """On PostgreSQL the check's writes are pipelined: their errors arrive late, but still before the answer."""
    import exchange.api.recognition as recognition
    from exchange.store.models import AuditRecord

    from sqlalchemy import Column, Integer, MetaData, Table

    from exchange.store import write

    missing = Table("no_such_table", MetaData(), Column("x", Integer))

    def failing(conn, *args) -> None:  # type: ignore[no-untyped-def]
        write.insert(conn, missing, [{"x": 1}])  # through the store's write path, as the real presentation rows

    monkeypatch.setattr(recognition, "_present", failing)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer,
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="hrx-engine")
    with TestClient(create_app(context), raise_server_exceptions=False) as client:
        principals.encounter(pseudonymizer.pseudonym(RESIDENT_ID), "bj-chaoyang-001")
        response = client.post("/api/v1/recognition/check", headers=principals.his("bj-chaoyang-001"), json={
            "patient": {"resident_id": RESIDENT_ID}, "requesting_institution": "bj-chaoyang-001", "at": AT})
    assert response.status_code == 500 and "results" not in response.text
    with database.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AuditRecord)).scalar_one() == 0


def test_on_sqlite_the_answer_is_built_without_holding_the_write_lock(book, database, pseudonymizer,
                                                                      monkeypatch, principals) -> None:  # type: ignore[no-untyped-def]
    """A long answer must not keep the engine from writing: SQLite has one write lock, taken by the check's
    first write (its audit row) and held until the commit."""
    import sqlite3

    import exchange.api.recognition as recognition

    build = recognition._answer
    writable: list[bool] = []

    def building(*args):  # type: ignore[no-untyped-def]
        if database.dialect.name == "sqlite":
            other = sqlite3.connect(database.url.database, timeout=0.2, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # what the engine's next batch does
                other.execute("ROLLBACK")
                writable.append(True)
            except sqlite3.OperationalError:
                writable.append(False)
            finally:
                other.close()
        return build(*args)

    monkeypatch.setattr(recognition, "_answer", building)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer,
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="hrx-engine")
    with TestClient(create_app(context)) as client:
        principals.encounter(pseudonymizer.pseudonym(RESIDENT_ID), "bj-chaoyang-001")
        response = client.post("/api/v1/recognition/check", headers=principals.his("bj-chaoyang-001"), json={
            "patient": {"resident_id": RESIDENT_ID}, "requesting_institution": "bj-chaoyang-001", "at": AT})
    assert response.status_code == 200 and response.json()["complete"] is True
    assert writable == ([True] if database.dialect.name == "sqlite" else [])

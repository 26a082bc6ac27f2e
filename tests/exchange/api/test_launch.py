"""Launching the clinician's pages from the HIS: a signed, short-lived, one-use token for a clinician session with
the patient and encounter as its context (both stores)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from adapters.pipeline import ResultPipeline
from exchange.api import Context, create_app
from exchange.api.access import CSRF_HEADER, SESSION_COOKIE
from exchange.api.launch import sign, verify
from exchange.store import Delivery, ingest
from tests.exchange.api.test_decisions import ISSUER, REQUESTER, RESIDENT_ID, _report
from tests.fakes import FakePublisher


@pytest.fixture
def api(book, database, pseudonymizer, principals) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """One patient with a result from ISSUER and no encounter at REQUESTER yet; dr-wang a clinician there."""
    event = ResultPipeline(book, pseudonymizer).lab_event(_report("R1", [("BJXCGLU", 99.0, "mg/dL")]), "fhir")
    with database.begin() as conn:
        ingest(conn, [Delivery(event)])
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    with TestClient(create_app(context)) as client:
        principals.clinician(REQUESTER)
        client.pseudonym = event["patient"]["pseudonym"]  # type: ignore[attr-defined]
        client.his = principals.his(REQUESTER, "dr-wang")  # type: ignore[attr-defined]
        client.context = context  # type: ignore[attr-defined]
        client.auditor = principals.auditor()  # type: ignore[attr-defined]
        yield client


def _launch(api: TestClient, **headers: str) -> dict:  # type: ignore[type-arg]
    answer = api.post("/api/v1/launch", headers={**api.his, **headers}, json={  # type: ignore[attr-defined]
        "patient": {"resident_id": RESIDENT_ID}, "encounter_id": "V-77"})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_launch_gives_the_clinician_a_session_on_that_patient_and_encounter_once(api: TestClient) -> None:
    launched = _launch(api)
    assert launched["url"] == f"/ui/launch?token={launched['token']}" and 0 < launched["expires_in"] <= 300
    assert RESIDENT_ID not in launched["token"]
    redeemed = api.post("/api/v1/launch/session", json={"token": launched["token"]})
    assert redeemed.status_code == 200, redeemed.text
    session = redeemed.json()
    assert session["principal"]["id"] == "dr-wang" and session["principal"]["role"] == "clinician"
    assert session["context"] == {"patient": api.pseudonym, "encounter_id": "V-77",  # type: ignore[attr-defined]
                                  "institution": REQUESTER}
    assert SESSION_COOKIE in api.cookies
    # The session reads the patient: the launch registered the encounter (the treatment relationship).
    check = api.post("/api/v1/recognition/check", headers={CSRF_HEADER: session["csrf_token"]}, json={
        "patient": {"pseudonym": session["context"]["patient"]}, "requesting_institution": REQUESTER,
        "encounter_id": "V-77"})
    assert check.status_code == 200, check.text
    assert [e["result"]["ref"] for e in check.json()["results"]] == [f"{ISSUER}/R1"]
    api.cookies.clear()
    again = api.post("/api/v1/launch/session", json={"token": launched["token"]})
    assert again.status_code == 401 and "used already" in again.json()["error"]
    assert SESSION_COOKIE not in api.cookies
    trail = api.get("/api/v1/audit", headers=api.auditor,  # type: ignore[attr-defined]
                    params={"patient": api.pseudonym}).json()["records"]  # type: ignore[attr-defined]
    actions = [(r["action"], r["actor"]) for r in trail]
    assert ("launch.issue", f"his-{REQUESTER}") in actions and ("launch.redeem", "dr-wang") in actions


def test_a_forged_altered_or_expired_token_is_refused(api: TestClient) -> None:
    token = _launch(api)["token"]
    payload, _, signature = token.partition(".")
    key = api.context.launch_key  # type: ignore[attr-defined]
    claims = verify(key, token, datetime.now(UTC))
    forged = sign(b"another key" * 3, claims)
    expired = sign(key, {**claims, "exp": int((datetime.now(UTC) - timedelta(seconds=1)).timestamp())})
    other_patient = sign(b"x", {**claims, "pat": "f" * 64})
    for bad, why in ((forged, "signature"), (f"{payload}x.{signature}", "signature"), (expired, "expired"),
                     (f"{other_patient.partition('.')[0]}.{signature}", "signature"), ("garbage", "not a launch")):
        refused = api.post("/api/v1/launch/session", json={"token": bad})
        assert refused.status_code == 401 and why in refused.json()["error"], (bad, refused.text)
    assert SESSION_COOKIE not in api.cookies
    assert api.post("/api/v1/launch/session", json={"token": token}).status_code == 200  # the real one still works


def test_a_his_launches_only_for_an_enabled_clinician_of_its_own_institution(api: TestClient, principals) -> None:  # type: ignore[no-untyped-def]
    principals.clinician("bj-xicheng-001", username="dr-far")
    for clinician in ("nobody", "dr-far"):
        refused = api.post("/api/v1/launch", headers={**api.his, "X-HRX-On-Behalf-Of": clinician},  # type: ignore[attr-defined]
                           json={"patient": {"resident_id": RESIDENT_ID}, "encounter_id": "V-1"})
        assert refused.status_code == 422 and refused.json()["field"] == "X-HRX-On-Behalf-Of", refused.text
    token = _launch(api)["token"]
    from exchange.auth import accounts

    accounts.disable_user(principals.database, "dr-wang")  # disabled between launch and redemption
    assert api.post("/api/v1/launch/session", json={"token": token}).status_code == 401


def test_another_api_replica_redeems_the_token_and_the_key_is_not_the_pseudonym_key(  # type: ignore[no-untyped-def]
        api: TestClient, book, database, pseudonymizer) -> None:
    # Two `hrx serve` behind one address share the store and the pseudonym key, not a process: the launch key is
    # derived from the pseudonym key, so the replica that did not issue the token redeems it.
    token = _launch(api)["token"]
    replica = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    assert replica.launch_key == api.context.launch_key != pseudonymizer.key  # type: ignore[attr-defined]
    with TestClient(create_app(replica)) as other:
        redeemed = other.post("/api/v1/launch/session", json={"token": token})
        assert redeemed.status_code == 200, redeemed.text
        assert other.post("/api/v1/launch/session", json={"token": token}).status_code == 401  # still once

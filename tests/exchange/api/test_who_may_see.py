"""docs/rules.md, "Who may see what", end to end on both stores: the treatment relationship, break-glass, the
patient's one-time-code login, access log and sharing blocks, and the life of credentials (expiry, revocation,
rotation, lockout, second factor, sessions with CSRF)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from adapters.pipeline import ResultPipeline
from exchange.api import Context, create_app
from exchange.auth import accounts
from exchange.auth.patient_codes import FileSender, MAX_TRIES
from exchange.store import Delivery, ingest
from exchange.store.access import Account, BreakGlass, Token
from tests.fakes import FakePublisher
from tests.fixtures.principals import PASSWORD, Principals

REQUESTER, ISSUER, OTHER_ISSUER = "bj-chaoyang-001", "bj-xicheng-001", "he-sjz-001"
RESIDENT_ID = "110105198003120024"


@pytest.fixture
def api(book, database, pseudonymizer, principals, tmp_path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A patient with a glucose result from ISSUER and a blood count from OTHER_ISSUER; no encounter yet."""
    from adapters.report import Code, LabObservation, LabReport, Patient, Value

    pipeline = ResultPipeline(book, pseudonymizer)
    reported = datetime.now(UTC) - timedelta(days=1)
    events = [pipeline.lab_event(LabReport(
        institution=issuer, result_id=rid, version=1, status="final", patient=Patient(RESIDENT_ID),
        codes=[Code(code)], reported_at=reported,
        observations=[LabObservation([Code(code)], Value("quantity", value, unit=unit))]), "fhir")
        for issuer, rid, code, value, unit in ((ISSUER, "GLU-1", "BJXCGLU", 99.0, "mg/dL"),
                                               (OTHER_ISSUER, "WBC-1", "SJZ_WBC", 6.3, "10*9/L"))]
    with database.begin() as conn:
        ingest(conn, [Delivery(e) for e in events])
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g",  # type: ignore[arg-type]
                      code_sender=FileSender(tmp_path / "codes.jsonl"))
    with TestClient(create_app(context)) as client:
        client.pseudonym = events[0]["patient"]["pseudonym"]  # type: ignore[attr-defined]
        client.codes = tmp_path / "codes.jsonl"  # type: ignore[attr-defined]
        yield client


def _timeline(api: TestClient, headers: dict[str, str]) -> tuple[int, list[str]]:
    response = api.get(f"/api/v1/patients/{api.pseudonym}/results", headers=headers)
    return response.status_code, sorted(r["ref"] for r in response.json().get("results", []))


BOTH = [f"{ISSUER}/GLU-1", f"{OTHER_ISSUER}/WBC-1"]


def test_the_treatment_relationship(api, principals: Principals) -> None:  # type: ignore[no-untyped-def]
    doctor = principals.clinician(REQUESTER)
    assert _timeline(api, doctor)[0] == 403  # no encounter
    principals.encounter(api.pseudonym, "sh-xuhui-001", key="E-elsewhere")
    assert _timeline(api, doctor)[0] == 403  # an encounter at another institution
    yesterday = datetime.now(UTC) - timedelta(days=1)
    principals.encounter(api.pseudonym, REQUESTER, key="E-closed", starts_at=yesterday - timedelta(days=2),
                         ends_at=yesterday)
    assert _timeline(api, doctor)[0] == 403  # closed
    principals.encounter(api.pseudonym, REQUESTER, key="E-open")
    assert _timeline(api, doctor) == (200, BOTH)


def test_a_his_naming_its_encounter_on_a_check_opens_the_relationship(api, principals: Principals) -> None:  # type: ignore[no-untyped-def]
    his = principals.his(REQUESTER, "dr-wang")
    body = {"patient": {"resident_id": RESIDENT_ID}, "requesting_institution": REQUESTER}
    assert api.post("/api/v1/recognition/check", headers=his, json=body).status_code == 403
    named = api.post("/api/v1/recognition/check", headers=his, json={**body, "encounter_id": "V-1"})
    assert named.status_code == 200 and len(named.json()["results"]) == 2
    assert _timeline(api, his)[0] == 200
    assert api.post("/api/v1/recognition/check", headers={"Authorization": his["Authorization"]},
                    json=body).status_code == 403  # a HIS names the clinician it acts for


def test_break_glass(api, principals: Principals, database) -> None:  # type: ignore[no-untyped-def]
    doctor = principals.clinician(REQUESTER, name="张三丰")
    glass = {"patient": {"resident_id": RESIDENT_ID}, "reason": "unconscious, brought in by ambulance"}
    short = api.post("/api/v1/break-glass", headers=doctor, json={**glass, "reason": "urgent"})
    assert short.status_code == 422 and short.json()["field"] == "reason"
    opened = api.post("/api/v1/break-glass", headers=doctor, json=glass)
    assert opened.status_code == 201, opened.text
    assert _timeline(api, doctor) == (200, BOTH)
    trail = api.get("/api/v1/audit", params={"patient": api.pseudonym}, headers=principals.auditor()).json()
    read = next(r for r in trail["records"] if r["action"] == "patient.results")
    assert (read["break_glass"], read["purpose"], read["role"]) == (True, "emergency", "clinician")
    seen = api.get("/api/v1/me/access-log", headers=principals.patient(api.pseudonym)).json()["accesses"]
    mine = [a for a in seen if a["what"] == "patient.results"]
    assert mine and mine[0]["break_glass"] and mine[0]["who"] == "张**" and mine[0]["institution"] == REQUESTER
    with database.begin() as conn:  # the window closes
        conn.execute(update(BreakGlass).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert _timeline(api, doctor)[0] == 403


def test_the_patient_logs_in_with_a_one_time_code(api) -> None:  # type: ignore[no-untyped-def]
    who = {"patient": {"resident_id": RESIDENT_ID}}
    assert api.post("/api/v1/patient/code", json=who).status_code == 202
    line = json.loads(api.codes.read_text("utf-8").splitlines()[-1])
    assert RESIDENT_ID not in json.dumps(line) and line["pseudonym"] == api.pseudonym
    for _ in range(MAX_TRIES):
        assert api.post("/api/v1/patient/token", json={**who, "code": "not it"}).status_code == 401
    spent = api.post("/api/v1/patient/token", json={**who, "code": line["code"]})
    assert spent.status_code == 401  # too many wrong tries: the right code no longer works
    assert api.post("/api/v1/patient/code", json=who).status_code == 429  # and not at once a new one


def test_a_patients_block_holds_back_results_except_in_break_glass(api, principals: Principals) -> None:  # type: ignore[no-untyped-def]
    me = principals.patient(api.pseudonym)
    doctor = principals.clinician(REQUESTER)
    principals.encounter(api.pseudonym, REQUESTER)
    block = api.post("/api/v1/me/blocks", headers=me, json={"issuer": OTHER_ISSUER})
    assert block.status_code == 201
    assert _timeline(api, doctor) == (200, [f"{ISSUER}/GLU-1"])
    his = principals.his(REQUESTER, "dr-wang")
    check = api.post("/api/v1/recognition/check", headers=his, json={
        "patient": {"resident_id": RESIDENT_ID}, "requesting_institution": REQUESTER}).json()
    assert [e["result"]["ref"] for e in check["results"]] == [f"{ISSUER}/GLU-1"]
    principals.encounter(api.pseudonym, OTHER_ISSUER, key="E-home")  # the issuer sees its own results
    assert _timeline(api, principals.clinician(OTHER_ISSUER, username="dr-sjz")) == (200, BOTH)
    assert api.post("/api/v1/break-glass", headers=doctor, json={
        "patient": {"pseudonym": api.pseudonym}, "reason": "anaphylaxis, history needed now"}).status_code == 201
    assert _timeline(api, doctor) == (200, BOTH)
    assert api.get("/api/v1/me/results", headers=me).status_code == 200
    log = api.get("/api/v1/me/access-log", headers=me).json()["accesses"]
    assert "patient.block" in {a["what"] for a in log}  # the block itself is audited
    removed = api.delete(f"/api/v1/me/blocks/{block.json()['id']}", headers=me)
    assert removed.status_code == 200 and removed.json()["blocks"] == []


def test_expired_revoked_and_rotated_credentials(api, principals: Principals, database) -> None:  # type: ignore[no-untyped-def]
    principals.encounter(api.pseudonym, REQUESTER)
    secret = accounts.add_client(database, "his-x", "his", REQUESTER, "HIS")
    token = api.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": "his-x",
                                                 "client_secret": secret}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "X-HRX-On-Behalf-Of": "dr-wang"}
    assert _timeline(api, headers)[0] == 200
    with database.begin() as conn:
        conn.execute(update(Token).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert _timeline(api, headers)[0] == 401
    new = accounts.rotate_client(database, "his-x")
    basic = api.post("/api/v1/auth/token", data={"grant_type": "client_credentials"}, auth=("his-x", secret))
    assert basic.status_code == 401  # the old secret
    token = api.post("/api/v1/auth/token", data={"grant_type": "client_credentials"},
                     auth=("his-x", new)).json()["access_token"]
    headers["Authorization"] = f"Bearer {token}"
    assert _timeline(api, headers)[0] == 200
    accounts.revoke_client(database, "his-x")
    assert _timeline(api, headers)[0] == 401
    assert api.post("/api/v1/auth/token", data={"grant_type": "client_credentials"},
                    auth=("his-x", new)).status_code == 401


def test_lockout_second_factor_and_disabled_accounts(api, database) -> None:  # type: ignore[no-untyped-def]
    totp = accounts.add_user(database, "op-1", "operator", "赵运营", PASSWORD, scope="national")
    assert totp is not None

    def token(password: str, code: str | None) -> int:
        form = {"grant_type": "password", "username": "op-1", "password": password, **({"totp": code} if code else {})}
        return api.post("/api/v1/auth/token", data=form).status_code

    def code(steps: int) -> str:  # the code ``steps`` time steps from now (one step of drift is accepted)
        return pyotp.TOTP(totp).at(time.time() + 30 * steps)

    assert token(PASSWORD, None) == 401  # an operator needs the second factor
    first = code(0)
    assert token(PASSWORD, first) == 200
    assert token(PASSWORD, first) == 401  # a code logs in once (RFC 6238 §5.2): a replay is refused
    for _ in range(accounts.MAX_FAILED_LOGINS - 1):
        assert token("wrong password", code(0)) == 401
    assert token(PASSWORD, code(0)) == 429  # locked, the right password included
    accounts.set_password(database, "op-1", PASSWORD)  # an admin's reset unlocks
    assert token(PASSWORD, code(1)) == 200
    accounts.disable_user(database, "op-1")
    assert token(PASSWORD, code(1)) == 401
    with database.connect() as conn:
        assert conn.execute(Account.__table__.select()).first().password_hash.startswith("$argon2id$")


def test_a_web_session_needs_its_csrf_token_for_changes(api, principals: Principals) -> None:  # type: ignore[no-untyped-def]
    principals.clinician(REQUESTER, username="dr-web")
    principals.encounter(api.pseudonym, REQUESTER)
    login = api.post("/api/v1/auth/login", json={"username": "dr-web", "password": PASSWORD})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert _timeline(api, {})[0] == 200  # a read: the cookie suffices
    glass = {"patient": {"pseudonym": api.pseudonym}, "reason": "cardiac arrest in the waiting room"}
    assert api.post("/api/v1/break-glass", json=glass).status_code == 403  # a change without the CSRF token
    csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
    assert api.post("/api/v1/break-glass", json=glass, headers=csrf).status_code == 201
    assert api.post("/api/v1/auth/logout", headers=csrf).status_code == 200
    api.cookies.clear()
    assert _timeline(api, {})[0] == 401


def test_the_accounts_command_line(database, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from exchange.cli import main

    monkeypatch.setenv("HRX_DATABASE_URL", database.url.render_as_string(hide_password=False))
    monkeypatch.setenv("HRX_VAR_DIR", str(tmp_path))
    run = CliRunner().invoke
    added = run(main, ["users", "add", "aud-1", "--role", "auditor", "--name", "钱审计", "--scope", "11",
                       "--password", PASSWORD])
    assert added.exit_code == 0 and "otpauth://totp/" in added.output, added.output
    assert run(main, ["users", "add", "x", "--role", "patient", "--name", "x", "--password", PASSWORD]).exit_code == 2
    client = run(main, ["clients", "add", "lis-1", "--role", "source", "--institution", ISSUER])
    assert client.exit_code == 0 and "secret (shown once)" in client.output, client.output
    assert run(main, ["clients", "add", "lis-2", "--role", "source", "--institution", "nowhere"]).exit_code == 2
    assert run(main, ["clients", "revoke", "lis-1"]).exit_code == 0
    listed = run(main, ["clients", "list"]).output
    assert "lis-1\tsource\tbj-xicheng-001\trevoked" in listed
    assert "aud-1\tauditor\t11" in run(main, ["users", "list"]).output


def test_the_auditor_lists_by_patient_principal_and_institution_break_glass_first(api, principals: Principals) -> None:  # type: ignore[no-untyped-def]
    principals.encounter(api.pseudonym, REQUESTER)
    doctor = principals.clinician(REQUESTER)
    _timeline(api, doctor)
    api.post("/api/v1/break-glass", headers=doctor, json={"patient": {"pseudonym": api.pseudonym},
                                                           "reason": "sepsis, previous cultures needed"})
    _timeline(api, doctor)
    auditor = principals.auditor()

    def listed(**params: object) -> list[tuple[str, bool]]:
        answer = api.get("/api/v1/audit", params=params, headers=auditor)
        assert answer.status_code == 200, answer.text
        return [(r["action"], r["break_glass"]) for r in answer.json()["records"]]

    by_doctor = listed(principal="dr-wang")
    assert by_doctor[:2] == [("patient.results", True), ("break_glass.open", True)]
    assert by_doctor[2:] == [("patient.results", False)]
    assert listed(break_glass=True) == by_doctor[:2]
    assert [a for a, _ in listed(institution=REQUESTER)] == [a for a, _ in by_doctor]
    shanghai = principals.auditor(scope="31")
    assert api.get("/api/v1/audit", params={"institution": REQUESTER}, headers=shanghai).status_code == 403
    outside = api.get("/api/v1/audit", params={"patient": api.pseudonym}, headers=shanghai).json()["records"]
    assert all(r["institution"] is None or r["institution"].startswith("sh-") for r in outside)


def test_an_address_past_the_failed_login_limit_is_refused_whatever_account_it_tries(api, database) -> None:  # type: ignore[no-untyped-def]
    from exchange.auth.throttle import LIMIT

    accounts.add_user(database, "dr-ok", "clinician", "王医生", PASSWORD, institution=REQUESTER)

    def login(username: str, password: str) -> int:
        return api.post("/api/v1/auth/token", data={"grant_type": "password", "username": username,
                                                    "password": password}).status_code

    for n in range(LIMIT):  # spraying: one try per account, below any account's lockout
        assert login(f"someone-{n}", "guess") == 401
    assert login("dr-ok", PASSWORD) == 429  # the right password too, from this address
    refused = api.post("/api/v1/auth/token", data={"grant_type": "password", "username": "dr-ok",
                                                   "password": PASSWORD})
    assert "retry in" in refused.json()["error"]

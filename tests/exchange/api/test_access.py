"""Every route of /openapi.json walked with four callers: anonymous → 401, a role the route does not admit →
403, the right role for another institution or scope → 403, the right principal → 2xx (both stores). A route
added without an access rule, or missing from the table below, fails here."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import shutil

import httpx
import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from adapters.pipeline import ResultPipeline
from codes import default_codes_dir, load_codebook
from exchange.api import Context, create_app
from exchange.api.access import PUBLIC, rule_of
from exchange.api.app import api_routers
from exchange.store import Delivery, ingest
from exchange.auth.patient_codes import FileSender
from tests.fakes import FakePublisher
from tests.fixtures.principals import PASSWORD, Principals

REQUESTER, ISSUER, ELSEWHERE = "bj-chaoyang-001", "bj-xicheng-001", "sh-xuhui-001"
RESIDENT_ID = "110105198003120024"
BUNDLE = json.loads((Path(__file__).parents[2] / "data/fhir/lab-bundle.json").read_text("utf-8"))


@dataclass
class World:
    client: TestClient
    who: Principals
    pseudonym: str
    feedback_id: str
    block_id: int
    codes: Path  # where the FileSender writes patients' one-time codes
    job_id: str  # the re-map after a mapping added to the world's own code directory


@pytest.fixture(scope="module")
def own_codes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A code directory of the operator's own (the shipped demo data is never edited)."""
    root = tmp_path_factory.mktemp("access") / "codes"
    shutil.copytree(default_codes_dir(), root)
    return root


@pytest.fixture
def world(own_codes, database, pseudonymizer, principals, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """One patient with a result from ISSUER, in an open encounter at REQUESTER; a feedback, a block and a
    re-map job, over a copy of the code directory (a mapping is added to it)."""
    from tests.exchange.api.test_decisions import _report

    from tests.exchange.api.test_fhir_search import _ct

    codes = tmp_path / "codes"
    shutil.copytree(own_codes, codes)
    book = load_codebook(codes)
    pipeline = ResultPipeline(book, pseudonymizer)
    event = pipeline.lab_event(_report("R1", [("BJXCGLU", 99.0, "mg/dL")]), "fhir")
    with database.begin() as conn:
        ingest(conn, [Delivery(event), Delivery(pipeline.imaging_event(_ct(), "dicom"))])
    pseudonym = event["patient"]["pseudonym"]
    principals.encounter(pseudonym, REQUESTER)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g",  # type: ignore[arg-type]
                      code_sender=FileSender(tmp_path / "codes.jsonl"))
    with TestClient(create_app(context)) as client:
        feedback = client.post("/api/v1/feedback", headers=principals.his(REQUESTER), json={
            "result_id": f"{ISSUER}/R1", "kind": "report_problem", "note": "单位疑似错误",
            "reporter_institution": REQUESTER})
        assert feedback.status_code == 201, feedback.text
        block = client.post("/api/v1/me/blocks", headers=principals.patient(pseudonym), json={"category": "molecular"})
        assert block.status_code == 201, block.text
        mapping = client.post("/api/v1/mappings", headers=principals.operator(), json={
            "institution": ISSUER, "local_code": "WORLD-1", "unified_code": "L0032"})
        assert mapping.status_code == 201, mapping.text
        yield World(client, principals, pseudonym, feedback.json()["feedback_id"], block.json()["id"],
                    tmp_path / "codes.jsonl", mapping.json()["job"]["id"])


Call = Callable[[World, dict[str, str]], httpx.Response]
Who = Callable[[World], dict[str, str]]  # the headers of a caller, made in the world's store


@dataclass(frozen=True)
class Case:
    """How to call a route, who may (``right``), a role it refuses (``wrong``), the right role elsewhere."""

    call: Call
    right: Who
    wrong: Who | None = None
    elsewhere: Who | None = None
    public: bool = False


def _check(w: World, h: dict[str, str]) -> httpx.Response:
    return w.client.post("/api/v1/recognition/check", headers=h, json={
        "patient": {"resident_id": RESIDENT_ID}, "requesting_institution": REQUESTER})


def _decision(w: World, h: dict[str, str]) -> httpx.Response:
    return w.client.post("/api/v1/decisions", headers=h, json={
        "result_id": f"{ISSUER}/R1", "requesting_institution": REQUESTER, "clinician_id": "dr-wang",
        "encounter_id": "E-open", "trigger": "encounter", "decision": "accept"})


def _batch(w: World, h: dict[str, str]) -> httpx.Response:
    return w.client.post("/api/v1/decisions/batch", headers=h, json={
        "patient": {"resident_id": RESIDENT_ID}, "issuer": ISSUER, "requesting_institution": REQUESTER,
        "clinician_id": "dr-wang", "encounter_id": "E-open", "trigger": "encounter", "decision": "accept"})


def _token(w: World, h: dict[str, str]) -> httpx.Response:
    from exchange.auth import accounts

    secret = accounts.add_client(w.who.database, "token-test", "his", REQUESTER, "token test")
    return w.client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": "token-test",
                                                     "client_secret": secret})


def _login(w: World, h: dict[str, str]) -> httpx.Response:
    w.who.clinician(REQUESTER, username="dr-login")
    return w.client.post("/api/v1/auth/login", json={"username": "dr-login", "password": PASSWORD})


def _patient_login(w: World, h: dict[str, str]) -> httpx.Response:
    sent = w.client.post("/api/v1/patient/code", json={"patient": {"resident_id": RESIDENT_ID}})
    assert sent.status_code == 202, sent.text
    code = json.loads(w.codes.read_text("utf-8").splitlines()[-1])["code"]
    return w.client.post("/api/v1/patient/token", json={"patient": {"resident_id": RESIDENT_ID}, "code": code})


def _launch(w: World, h: dict[str, str]) -> httpx.Response:
    w.who.clinician(REQUESTER)  # the clinician the HIS acts for (dr-wang) has an account there
    return w.client.post("/api/v1/launch", headers=h, json={"patient": {"resident_id": RESIDENT_ID},
                                                            "encounter_id": "E-launch"})


def _redeem(w: World, h: dict[str, str]) -> httpx.Response:
    issued = _launch(w, w.who.his(REQUESTER))
    assert issued.status_code == 201, issued.text
    return w.client.post("/api/v1/launch/session", json={"token": issued.json()["token"]})


def _cds_hook(w: World, h: dict[str, str]) -> httpx.Response:
    return w.client.post("/cds-services/hrx-prior-results", headers=h, json={
        "hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/dr-wang", "patientId": w.pseudonym}})


def _cds_feedback(w: World, h: dict[str, str]) -> httpx.Response:
    issued = _cds_hook(w, w.who.his(REQUESTER))
    assert issued.status_code == 200 and issued.json()["cards"], issued.text
    return w.client.post("/cds-services/hrx-prior-results/feedback", headers=h, json={"feedback": [{
        "card": issued.json()["cards"][0]["uuid"], "outcome": "accepted",
        "outcomeTimestamp": datetime.now(UTC).isoformat()}]})


def _fhir_read(path: str, version: bool = False) -> Call:
    def call(w: World, h: dict[str, str]) -> httpx.Response:
        from sqlalchemy import func, select

        from exchange.store.models import Observation, Result

        with w.who.database.connect() as conn:
            result_id = "ACC-CT-1" if path == "ImagingStudy" else "R1"
            pk = conn.execute(select(func.min(Result.id)).where(Result.result_id == result_id)).scalar_one()
            seq = conn.execute(select(func.min(Observation.seq)).where(Observation.result_pk == pk)).scalar_one()
        ident = f"{pk}-{seq}" if path == "Observation" else str(pk)
        history = f"/_history/{1 if path == 'ImagingStudy' else 2}" if version else ""
        return w.client.get(f"/fhir/{path}/{ident}{history}", headers=h)

    return call


def _fhir_read_id(w: World) -> int:
    from sqlalchemy import func, select

    from exchange.store.models import Result

    with w.who.database.connect() as conn:
        return int(conn.execute(select(func.min(Result.id)).where(Result.result_id == "R1")).scalar_one())


def _fhir_search(path: str) -> Call:
    return lambda w, h: w.client.get(f"/fhir/{path}", params={"patient": w.pseudonym}, headers=h)


his_here: Who = lambda w: w.who.his(REQUESTER)  # noqa: E731
his_elsewhere: Who = lambda w: w.who.his(ELSEWHERE, "dr-x")  # noqa: E731
operator: Who = lambda w: w.who.operator()  # noqa: E731
patient_role: Who = lambda w: w.who.patient("f" * 64)  # noqa: E731
any_role: Who = lambda w: w.who.his(REQUESTER)  # noqa: E731

CASES: dict[str, Case] = {
    "POST /fhir": Case(lambda w, h: w.client.post("/fhir", headers=h, json=BUNDLE),
                       lambda w: w.who.source(ISSUER), his_here, lambda w: w.who.source(ELSEWHERE)),
    "POST /api/v1/recognition/check": Case(_check, his_here, operator, his_elsewhere),
    "POST /fhir/$recognition-check": Case(lambda w, h: w.client.post("/fhir/$recognition-check", headers=h, json={
        "resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueIdentifier": {"system": "urn:oid:2.16.156.10011.1.3", "value": RESIDENT_ID}},
            {"name": "requester", "valueReference": {"reference": f"Organization/{REQUESTER}"}}]}),
        his_here, operator, his_elsewhere),
    "GET /fhir/metadata": Case(lambda w, h: w.client.get("/fhir/metadata", headers=h), any_role, public=True),
    "GET /fhir/StructureDefinition/{definition_id}": Case(
        lambda w, h: w.client.get("/fhir/StructureDefinition/hrx-recognition", headers=h), any_role, public=True),
    "GET /fhir/Organization/{institution}": Case(
        lambda w, h: w.client.get(f"/fhir/Organization/{ISSUER}", headers=h), patient_role),
    "GET /fhir/Patient": Case(lambda w, h: w.client.get("/fhir/Patient", headers=h, params={
        "identifier": f"urn:oid:2.16.156.10011.1.3|{RESIDENT_ID}"}), his_here, operator),
    "GET /fhir/Patient/{pseudonym}": Case(lambda w, h: w.client.get(f"/fhir/Patient/{w.pseudonym}", headers=h),
                                          his_here, operator, his_elsewhere),
    "GET /fhir/DiagnosticReport/{resource_id}/_history": Case(
        lambda w, h: w.client.get(f"/fhir/DiagnosticReport/{_fhir_read_id(w)}/_history", headers=h),
        his_here, operator, his_elsewhere),
    "GET /fhir/DiagnosticReport": Case(_fhir_search("DiagnosticReport"), his_here, operator, his_elsewhere),
    "GET /fhir/Observation": Case(_fhir_search("Observation"), his_here, patient_role, his_elsewhere),
    "GET /fhir/Observation/$lastn": Case(_fhir_search("Observation/$lastn"), his_here, operator, his_elsewhere),
    "GET /fhir/ImagingStudy": Case(_fhir_search("ImagingStudy"), his_here, operator, his_elsewhere),
    **{f"GET /fhir/{kind}/{{resource_id}}": Case(_fhir_read(kind), his_here, operator, his_elsewhere)
       for kind in ("DiagnosticReport", "Observation", "ImagingStudy")},
    **{f"GET /fhir/{kind}/{{resource_id}}/_history/{{version}}": Case(
        _fhir_read(kind, version=True), his_here, operator, his_elsewhere)
       for kind in ("DiagnosticReport", "ImagingStudy", "Observation")},
    "GET /api/v1/health": Case(lambda w, h: w.client.get("/api/v1/health", headers=h), any_role, public=True),
    "GET /api/v1/health/live": Case(lambda w, h: w.client.get("/api/v1/health/live", headers=h), any_role,
                                    public=True),
    "GET /api/v1/health/ready": Case(lambda w, h: w.client.get("/api/v1/health/ready", headers=h), any_role,
                                     public=True),
    # Open: no metric carries patient data (exchange/metrics.py; tests/exchange/api/test_metrics.py checks it)
    "GET /metrics": Case(lambda w, h: w.client.get("/metrics", headers=h), any_role, public=True),
    "GET /api/v1/catalogues": Case(lambda w, h: w.client.get("/api/v1/catalogues", headers=h), patient_role),
    "GET /api/v1/catalogues/{catalogue_id}": Case(
        lambda w, h: w.client.get("/api/v1/catalogues/jjj-lab", headers=h), lambda w: w.who.auditor()),
    "GET /api/v1/items/{code}": Case(lambda w, h: w.client.get("/api/v1/items/L0032", headers=h),
                                     lambda w: w.who.source(ISSUER)),
    "GET /api/v1/institutions/{institution_id}": Case(
        lambda w, h: w.client.get(f"/api/v1/institutions/{ISSUER}", headers=h), lambda w: w.who.admin()),
    "GET /api/v1/unmapped-codes": Case(
        lambda w, h: w.client.get("/api/v1/unmapped-codes", params={"institution": ISSUER}, headers=h),
        operator, patient_role, lambda w: w.who.source(ELSEWHERE)),
    "POST /api/v1/auth/token": Case(_token, any_role, public=True),
    "POST /api/v1/auth/login": Case(_login, any_role, public=True),
    "POST /api/v1/auth/logout": Case(lambda w, h: w.client.post("/api/v1/auth/logout", headers=h),
                                     lambda w: w.who.user("leaving", "clinician", institution=REQUESTER)),
    "GET /api/v1/auth/me": Case(lambda w, h: w.client.get("/api/v1/auth/me", headers=h), patient_role),
    "POST /api/v1/patient/code": Case(
        lambda w, h: w.client.post("/api/v1/patient/code", json={"patient": {"resident_id": "11010519491231002X"}}),
        any_role, public=True),
    "POST /api/v1/patient/token": Case(_patient_login, any_role, public=True),
    "POST /api/v1/encounters": Case(
        lambda w, h: w.client.post("/api/v1/encounters", headers=h, json={
            "patient": {"resident_id": RESIDENT_ID}, "encounter_id": "E-new", "department": "内科",
            "start": datetime.now(UTC).isoformat()}), his_here, lambda w: w.who.clinician(REQUESTER)),
    "POST /api/v1/break-glass": Case(
        lambda w, h: w.client.post("/api/v1/break-glass", headers=h, json={
            "patient": {"resident_id": RESIDENT_ID}, "reason": "unconscious patient, no relatives reachable"}),
        lambda w: w.who.clinician(REQUESTER), operator),
    "GET /api/v1/reason-codes": Case(lambda w, h: w.client.get("/api/v1/reason-codes", headers=h), operator),
    "POST /api/v1/decisions": Case(_decision, his_here, operator, his_elsewhere),
    "POST /api/v1/decisions/batch": Case(_batch, his_here, lambda w: w.who.auditor(), his_elsewhere),
    "POST /api/v1/feedback": Case(
        lambda w, h: w.client.post("/api/v1/feedback", headers=h, json={
            "result_id": f"{ISSUER}/R1", "kind": "report_problem", "note": "n", "reporter_institution": REQUESTER}),
        his_here, patient_role, his_elsewhere),
    "GET /api/v1/feedback": Case(lambda w, h: w.client.get("/api/v1/feedback", params={"issuer": ISSUER}, headers=h),
                                 lambda w: w.who.source(ISSUER), lambda w: w.who.clinician(REQUESTER),
                                 lambda w: w.who.source(ELSEWHERE)),
    "POST /api/v1/feedback/{feedback_id}/status": Case(
        lambda w, h: w.client.post(f"/api/v1/feedback/{w.feedback_id}/status", headers=h,
                                   json={"status": "acknowledged"}),
        lambda w: w.who.his(ISSUER, "dr-li"), lambda w: w.who.clinician(REQUESTER), his_here),
    "GET /api/v1/patients/{pseudonym}/results": Case(
        lambda w, h: w.client.get(f"/api/v1/patients/{w.pseudonym}/results", headers=h),
        his_here, operator, his_elsewhere),
    "GET /api/v1/me/results": Case(lambda w, h: w.client.get("/api/v1/me/results", headers=h), patient_role,
                                   his_here),
    "GET /api/v1/me/access-log": Case(lambda w, h: w.client.get("/api/v1/me/access-log", headers=h), patient_role,
                                      lambda w: w.who.auditor()),
    "GET /api/v1/me/blocks": Case(lambda w, h: w.client.get("/api/v1/me/blocks", headers=h), patient_role, operator),
    "POST /api/v1/me/blocks": Case(lambda w, h: w.client.post("/api/v1/me/blocks", headers=h, json={"issuer": ISSUER}),
                                   patient_role, his_here),
    "DELETE /api/v1/me/blocks/{block_id}": Case(
        lambda w, h: w.client.delete(f"/api/v1/me/blocks/{w.block_id}", headers=h),
        lambda w: w.who.patient(w.pseudonym), his_here),  # another patient's block: 404, as if there were none
    "GET /api/v1/stats": Case(lambda w, h: w.client.get("/api/v1/stats", params={"scope": "11"}, headers=h),
                              operator, lambda w: w.who.auditor(), lambda w: w.who.operator(scope="31")),
    "POST /api/v1/mappings": Case(
        lambda w, h: w.client.post("/api/v1/mappings", headers=h, json={
            "institution": ISSUER, "local_code": "ACCESS-1", "unified_code": "L0032"}),
        operator, his_here, lambda w: w.who.operator(scope="31")),
    "GET /api/v1/jobs/{job_id}": Case(lambda w, h: w.client.get(f"/api/v1/jobs/{w.job_id}", headers=h),
                                      operator, lambda w: w.who.auditor(), lambda w: w.who.operator(scope="31")),
    "GET /api/v1/dead-letters": Case(lambda w, h: w.client.get("/api/v1/dead-letters", headers=h), operator,
                                     lambda w: w.who.auditor()),
    "GET /api/v1/feedback-summary": Case(
        lambda w, h: w.client.get("/api/v1/feedback-summary", params={"scope": "11"}, headers=h), operator,
        lambda w: w.who.source(ISSUER), lambda w: w.who.operator(scope="31")),
    "GET /api/v1/catalogues/{catalogue_id}/diff": Case(
        lambda w, h: w.client.get("/api/v1/catalogues/jjj-lab/diff", headers=h), operator, his_here),
    "POST /api/v1/catalogues/import": Case(
        lambda w, h: w.client.post("/api/v1/catalogues/import", headers=h, params={
            "tier": "city", "scope": "110100", "dry_run": "true"},
            files={"file": ("list.csv", "项目名称,互认时限\n葡萄糖(GLU),7天\n".encode(), "text/csv")}),
        operator, lambda w: w.who.auditor()),
    "GET /api/v1/stats/coverage": Case(
        lambda w, h: w.client.get("/api/v1/stats/coverage", params={"scope": "11"}, headers=h),
        operator, lambda w: w.who.auditor(), lambda w: w.who.operator(scope="31")),
    "GET /api/v1/stats/timeseries": Case(
        lambda w, h: w.client.get("/api/v1/stats/timeseries", params={"scope": "11"}, headers=h),
        operator, his_here, lambda w: w.who.operator(scope="31")),
    "POST /api/v1/launch": Case(_launch, his_here, lambda w: w.who.clinician(REQUESTER)),
    "POST /api/v1/launch/session": Case(_redeem, any_role, public=True),
    "GET /cds-services": Case(lambda w, h: w.client.get("/cds-services", headers=h), any_role, public=True),
    "POST /cds-services/{service_id}": Case(_cds_hook, his_here, operator, his_elsewhere),
    # another institution's HIS is told no such card was issued (404), as for one never issued
    "POST /cds-services/{service_id}/feedback": Case(_cds_feedback, his_here, lambda w: w.who.auditor()),
    "GET /api/v1/audit": Case(lambda w, h: w.client.get("/api/v1/audit", params={"patient": w.pseudonym}, headers=h),
                              lambda w: w.who.auditor(), operator),
}


def _operations(client: TestClient) -> list[str]:
    document = client.get("/openapi.json").json()
    return [f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item]


def test_every_route_has_an_access_rule() -> None:
    missing = [f"{sorted(r.methods)} {r.path}" for router in api_routers() for r in router.routes
               if rule_of(r) is None]  # type: ignore[arg-type]
    assert not missing, f"routes without an access rule: {missing}"


def test_a_route_without_a_rule_is_found() -> None:
    bare = APIRouter()

    @bare.get("/bare")
    def answer() -> dict[str, str]:
        return {}

    @bare.get("/open")
    def open_(_: None = Depends(PUBLIC)) -> dict[str, str]:  # noqa: B008
        return {}

    assert [rule_of(r) is None for r in bare.routes] == [True, False]  # type: ignore[arg-type]


def test_every_route_is_walked_with_every_kind_of_caller(world: World) -> None:
    operations = _operations(world.client)
    assert sorted(operations) == sorted(CASES), "a route is missing from CASES, or CASES names a removed one"
    problems = []
    for name in operations:
        case = CASES[name]
        world.client.cookies.clear()  # a session set by an earlier call (the login) is not this caller's
        anonymous = case.call(world, {})
        world.client.cookies.clear()
        if case.public:
            # /health and /health/ready answer 503 here (no broker): their answer, not a refusal of the caller
            if anonymous.status_code in (401, 403) or not (200 <= anonymous.status_code < 300 or name in (
                    "GET /api/v1/health", "GET /api/v1/health/ready")):
                problems.append(f"{name}: public, yet {anonymous.status_code} to an anonymous caller")
            continue
        if anonymous.status_code != 401:
            problems.append(f"{name}: anonymous → {anonymous.status_code}, not 401")
        for label, who in (("wrong role", case.wrong), ("elsewhere", case.elsewhere)):
            if who is not None and (got := case.call(world, who(world)).status_code) != 403:
                problems.append(f"{name}: {label} → {got}, not 403")
        right = case.call(world, case.right(world))
        if not 200 <= right.status_code < 300:
            problems.append(f"{name}: the right principal → {right.status_code}: {right.text[:200]}")
    assert not problems, "\n".join(problems)

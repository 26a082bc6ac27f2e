"""CDS Hooks 2.0 (both stores): discovery, order-select / order-sign / patient-view cards for requests shaped like
the specification's examples (draft orders in LOINC and in the requesting hospital's local codes), feedback as
decisions (once per card), the 401 / 403 rules, the audit of every read, and override rates in the statistics."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select

from adapters.pipeline import ResultPipeline
from codes.calendar import beijing_minute
from exchange.api import Context, create_app
from exchange.cds.cards import REASON_CODE_SYSTEM
from exchange.store import Delivery, ingest
from exchange.store.models import Decision, IssuedCard
from schemas.resident_id import make_resident_id
from tests.exchange.api.test_decisions import _report
from tests.fakes import FakePublisher

RESIDENT_ID = make_resident_id("11010519800312002")
REQUESTER, ISSUER = "bj-chaoyang-001", "bj-xicheng-001"
UI = "https://hrx.example.cn/ui"
SELECT, SIGN, VIEW = "hrx-duplicate-order-select", "hrx-duplicate-order-sign", "hrx-prior-results"
LOCAL = f"urn:hrx:local-code:{REQUESTER}"  # the requesting hospital's own code system: its mapping table's codes


@pytest.fixture
def api(book, database, pseudonymizer, principals) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A patient with glucose + potassium (R1) and ALT (R2) from ISSUER, final, and AST (R3) preliminary; the CDS
    client is REQUESTER's HIS; the patient has no encounter there until a test opens one."""
    pipeline = ResultPipeline(book, pseudonymizer)
    events = [pipeline.lab_event(r, "fhir") for r in (
        _report("R1", [("BJXCGLU", 99.0, "mg/dL"), ("BJXCK", 4.1, "mmol/L")]),
        _report("R2", [("BJXCALT", 30.0, "U/L")]),
        _report("R3", [("BJXCAST", 25.0, "U/L")], status="preliminary"))]
    with database.begin() as conn:
        ingest(conn, [Delivery(e) for e in events])
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g", ui_base_url=UI)  # type: ignore[arg-type]
    with TestClient(create_app(context)) as client:
        client.pseudonym = events[0]["patient"]["pseudonym"]  # type: ignore[attr-defined]
        client.results = {e["result_id"]: e for e in events}  # type: ignore[attr-defined]
        client.his = principals.his(REQUESTER, "dr-wang")  # type: ignore[attr-defined]
        yield client


def _service_request(order_id: str, *codings: tuple[str, str, str]) -> dict[str, Any]:
    return {"resource": {"resourceType": "ServiceRequest", "id": order_id, "status": "draft", "intent": "proposal",
                         "subject": {"reference": "Patient/example"},
                         "code": {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings]}}}


#: The draft orders of the examples: glucose in LOINC and ALT in the hospital's local code (both have a
#: recognizable prior), AST (its prior is preliminary), HbA1c (no prior), a code nobody maps, and a medication.
DRAFT_ORDERS = {"resourceType": "Bundle", "type": "collection", "entry": [
    _service_request("glu", ("http://loinc.org", "14749-6", "Glucose [Moles/volume] in Serum or Plasma")),
    _service_request("alt", (LOCAL, "ALT", "谷丙转氨酶")),
    _service_request("ast", (LOCAL, "AST", "谷草转氨酶")),
    _service_request("a1c", ("http://loinc.org", "4548-4", "Hemoglobin A1c")),
    _service_request("odd", (LOCAL, "NO-SUCH-TEST", "?")),
    {"resource": {"resourceType": "MedicationRequest", "id": "med", "status": "draft", "intent": "order",
                  "subject": {"reference": "Patient/example"}}}]}


def _hook(api: TestClient, service: str, hook: str, *, patient_id: str | None = None, encounter: str | None = "E1",
          selections: list[str] | None = None, prefetch: dict[str, Any] | None = None,
          headers: dict[str, str] | None = None, user: str | None = "Practitioner/dr-wang") -> Any:
    context: dict[str, Any] = {"patientId": patient_id or api.pseudonym}  # type: ignore[attr-defined]
    if user:
        context["userId"] = user
    if encounter:
        context["encounterId"] = encounter
    if hook != "patient-view":
        context["draftOrders"] = DRAFT_ORDERS
    if selections is not None:
        context["selections"] = selections
    body: dict[str, Any] = {
        "hookInstance": str(uuid.uuid4()), "hook": hook, "fhirServer": "https://ehr.example.cn/fhir",
        # an access token for the EHR's FHIR server: accepted and never used (the exchange reads its own store)
        "fhirAuthorization": {"access_token": "some-opaque-fhir-access-token", "token_type": "Bearer",
                              "expires_in": 300, "scope": "user/Patient.read user/Observation.read",
                              "subject": "hrx-cds"},
        "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return api.post(f"/cds-services/{service}", json=body,
                    headers=api.his if headers is None else headers)  # type: ignore[attr-defined]


def _cards(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def _order_of(card: dict[str, Any]) -> str:
    return card["suggestions"][0]["actions"][0]["resourceId"]


def test_discovery_lists_the_three_services_with_the_patient_prefetch(book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    # Discovery reads no store and no caller: an app over an empty in-memory database, without its lifespan.
    context = Context(book=book, database=create_engine("sqlite://"), pseudonymizer=pseudonymizer,
                      publisher=FakePublisher(), bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    api = TestClient(create_app(context))
    services = api.get("/cds-services").json()["services"]  # open: a CDS client reads it before it is set up
    assert {(s["id"], s["hook"]) for s in services} == {
        (VIEW, "patient-view"), (SELECT, "order-select"), (SIGN, "order-sign")}
    assert all(s["prefetch"] == {"patient": "Patient/{{context.patientId}}"} for s in services)
    english = api.get("/cds-services", headers={"Accept-Language": "en-GB,en;q=0.9"}).json()["services"]
    chinese = {s["id"]: s["title"] for s in services}
    assert all(s["title"] != chinese[s["id"]] and s["title"].isascii() for s in english)


def test_order_sign_gives_a_card_per_duplicate_draft_order_in_loinc_and_in_local_codes(api, book) -> None:  # type: ignore[no-untyped-def]
    cards = _cards(_hook(api, SIGN, "order-sign"))
    assert sorted(_order_of(c) for c in cards) == ["ServiceRequest/alt", "ServiceRequest/glu"]
    reasons = api.get("/api/v1/reason-codes", headers=api.his).json()  # type: ignore[attr-defined]
    glucose = next(c for c in cards if _order_of(c) == "ServiceRequest/glu")
    assert glucose["summary"].startswith("近期已有可互认结果") and len(glucose["summary"]) < 140
    assert glucose["indicator"] == "warning" and glucose["selectionBehavior"] == "at-most-one"
    reported = datetime.fromisoformat(api.results["R1"]["reported_at"])  # type: ignore[attr-defined]
    assert book.institutions[ISSUER].name_zh in glucose["detail"]
    assert beijing_minute(reported) in glucose["detail"] and "互认有效期至" in glucose["detail"]
    assert glucose["suggestions"][0]["actions"][0]["type"] == "delete"
    assert glucose["overrideReasons"] == [{"system": REASON_CODE_SYSTEM, "code": r["code"], "display": r["zh"]}
                                          for r in reasons]
    assert glucose["links"] == [{"label": glucose["links"][0]["label"], "url": f"{UI}/results/{ISSUER}/R1",
                                 "type": "absolute"}]
    alt = next(c for c in cards if _order_of(c) == "ServiceRequest/alt")
    assert alt["links"][0]["url"] == f"{UI}/results/{ISSUER}/R2" and "30" in alt["detail"]


def test_order_select_looks_only_at_the_selected_orders_and_speaks_english_when_asked(api: TestClient) -> None:
    selected = _cards(_hook(api, SELECT, "order-select", selections=["ServiceRequest/alt", "ServiceRequest/a1c"],
                            headers={**api.his, "Accept-Language": "en-US,en;q=0.8,zh;q=0.5"}))  # type: ignore[attr-defined]
    assert [_order_of(c) for c in selected] == ["ServiceRequest/alt"]
    assert selected[0]["summary"].startswith("A recent result can be reused")
    assert {r["display"] for r in selected[0]["overrideReasons"]} >= {"Emergency or resuscitation"}
    none = _cards(_hook(api, SELECT, "order-select", selections=["ServiceRequest/ast", "ServiceRequest/odd"]))
    assert none == []  # a preliminary prior, and a code that maps to nothing: no card


def test_patient_view_lists_each_reusable_prior_item(api: TestClient) -> None:
    cards = _cards(_hook(api, VIEW, "patient-view"))
    urls = sorted(c["links"][0]["url"] for c in cards)
    assert urls == sorted([f"{UI}/results/{ISSUER}/R1"] * 2 + [f"{UI}/results/{ISSUER}/R2"])  # glucose, K, ALT
    assert all(c["indicator"] == "info" and "suggestions" not in c for c in cards)


def test_a_resident_id_in_the_prefetched_patient_names_the_patient(api: TestClient) -> None:
    patient = {"resourceType": "Patient", "id": "ehr-12345",
               "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": RESIDENT_ID}]}
    cards = _cards(_hook(api, SIGN, "order-sign", patient_id="ehr-12345", prefetch={"patient": patient}))
    assert len(cards) == 2
    unknown = _hook(api, SIGN, "order-sign", patient_id="ehr-12345", prefetch={"patient": None})
    assert unknown.status_code == 412 and unknown.json()["field"] == "context.patientId"


def test_authentication_and_the_treatment_relationship(api, principals) -> None:  # type: ignore[no-untyped-def]
    assert _hook(api, SIGN, "order-sign", headers={}).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert _hook(api, SIGN, "order-sign", headers=bad).status_code == 401
    # No open encounter and none named: 403, no cards (the JSON check's rule)
    refused = _hook(api, SIGN, "order-sign", encounter=None)
    assert refused.status_code == 403 and "cards" not in refused.json()
    clinician = principals.clinician(REQUESTER, username="dr-zhao")
    assert _hook(api, SIGN, "order-sign", encounter=None, headers=clinician, user=None).status_code == 403
    # Neither X-HRX-On-Behalf-Of nor context.userId names a clinician: 403
    his = {"Authorization": api.his["Authorization"]}  # type: ignore[attr-defined]
    assert _hook(api, SIGN, "order-sign", headers=his, user=None).status_code == 403
    # An encounter the HIS names opens the relationship; then the clinician (a person's token) sees cards too
    assert len(_cards(_hook(api, SIGN, "order-sign", headers=his))) == 2
    assert len(_cards(_hook(api, SIGN, "order-sign", encounter=None, headers=clinician, user=None))) == 2
    assert _hook(api, SIGN, "patient-view").status_code == 400  # the service answers its own hook only
    assert _hook(api, "no-such-service", "order-sign").status_code == 404


def _feedback(api: TestClient, service: str, *entries: dict[str, Any]) -> Any:
    stamped = [{"outcomeTimestamp": datetime.now(UTC).isoformat(), **e} for e in entries]
    return api.post(f"/cds-services/{service}/feedback", json={"feedback": stamped},
                    headers=api.his)  # type: ignore[attr-defined]


def _reason(code: str, comment: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"reason": {"system": REASON_CODE_SYSTEM, "code": code}}
    if comment is not None:
        found["userComment"] = comment
    return found


def _decisions(database) -> list[Decision]:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return list(conn.execute(select(Decision).order_by(Decision.id)).all())


def test_feedback_becomes_decisions_once_per_card(api, database) -> None:  # type: ignore[no-untyped-def]
    cards = {_order_of(c): c for c in _cards(_hook(api, SIGN, "order-sign"))}
    glu, alt = cards["ServiceRequest/glu"]["uuid"], cards["ServiceRequest/alt"]["uuid"]
    accepted = _feedback(api, SIGN, {"card": glu, "outcome": "accepted",
                                     "acceptedSuggestions": [{"id": cards["ServiceRequest/glu"]["suggestions"][0]
                                                              ["uuid"]}]})
    assert accepted.status_code == 200, accepted.text
    overridden = _feedback(api, SIGN, {"card": alt, "outcome": "overridden", "overrideReason": _reason("06")})
    assert overridden.status_code == 200, overridden.text
    made = _decisions(database)
    assert [(d.decision, d.item_code, d.result_id, d.reason_code, d.order_id, d.trigger, d.clinician_id,
             d.encounter_id) for d in made] == [
        ("accept", "L0032", "R1", None, "glu", "order", "dr-wang", "E1"),
        ("reject", "L0001", "R2", "06", "alt", "order", "dr-wang", "E1")]
    replay = _feedback(api, SIGN, {"card": alt, "outcome": "accepted"})  # the first outcome stands
    assert replay.json()["feedback"] == [{"card": alt, "outcome": "overridden", "decision_id": None, "replay": True}]
    assert len(_decisions(database)) == 2
    assert _feedback(api, SELECT, {"card": glu, "outcome": "accepted"}).status_code == 404  # another service's
    assert _feedback(api, SIGN, {"card": str(uuid.uuid4()), "outcome": "accepted"}).status_code == 404


def test_other_needs_a_comment_and_an_override_without_reason_decides_nothing(api, database) -> None:  # type: ignore[no-untyped-def]
    cards = {_order_of(c): c["uuid"] for c in _cards(_hook(api, SIGN, "order-sign"))}
    glu, alt = cards["ServiceRequest/glu"], cards["ServiceRequest/alt"]
    missing = _feedback(api, SIGN, {"card": glu, "outcome": "overridden", "overrideReason": _reason("08")})
    assert missing.status_code == 400 and missing.json()["field"] == "feedback[0].overrideReason.userComment"
    unknown = _feedback(api, SIGN, {"card": glu, "outcome": "overridden", "overrideReason": _reason("77")})
    assert unknown.status_code == 400 and unknown.json()["field"] == "feedback[0].overrideReason.reason.code"
    with database.connect() as conn:  # a refused feedback recorded nothing: the card is still open
        assert conn.execute(select(func.count()).where(IssuedCard.outcome.is_not(None))).scalar_one() == 0
    noted = _feedback(api, SIGN, {"card": glu, "outcome": "overridden",
                                  "overrideReason": _reason("08", "术前需当日复查")},
                      {"card": alt, "outcome": "overridden"})
    assert noted.status_code == 200, noted.text
    assert [(d.reason_code, d.note) for d in _decisions(database)] == [("08", "术前需当日复查")]


def test_override_rates_appear_in_the_statistics(api, principals) -> None:  # type: ignore[no-untyped-def]
    first = {_order_of(c): c["uuid"] for c in _cards(_hook(api, SIGN, "order-sign", encounter="E1"))}
    second = {_order_of(c): c["uuid"] for c in _cards(_hook(api, SIGN, "order-sign", encounter="E2"))}
    assert _feedback(api, SIGN, {"card": first["ServiceRequest/glu"], "outcome": "overridden",
                                 "overrideReason": _reason("04")},
                     {"card": first["ServiceRequest/alt"], "outcome": "overridden"},
                     {"card": second["ServiceRequest/glu"], "outcome": "accepted"}).status_code == 200
    now = datetime.now(UTC)
    stats = api.get("/api/v1/stats", headers=principals.operator(), params={
        "scope": "11", "from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()})
    assert stats.status_code == 200, stats.text
    cds = stats.json()["cds"]
    assert (cds["presented"], cds["accepted"], cds["overridden"], cds["override_rate"]) == (4, 1, 2, 0.5)
    assert {k: (v["count"], v["rate"]) for k, v in cds["overridden_by_reason"].items()} == {
        "04": (1, 0.25), "none": (1, 0.25)}
    assert stats.json()["rejected_by_reason"]["04"]["count"] == 1  # and the reject decision counts as ever


def test_every_hook_call_and_feedback_is_audited(api, principals) -> None:  # type: ignore[no-untyped-def]
    his = {"Authorization": api.his["Authorization"]}  # type: ignore[attr-defined]
    cards = _cards(_hook(api, SIGN, "order-sign", headers=his, user="Practitioner/dr-liu"))
    _cards(_hook(api, VIEW, "patient-view"))
    assert _feedback(api, SIGN, {"card": cards[0]["uuid"], "outcome": "accepted"}).status_code == 200
    # without X-HRX-On-Behalf-Of, the feedback is the clinician's the card was issued to
    assert api.post(f"/cds-services/{SIGN}/feedback", headers=his, json={"feedback": [{
        "card": cards[1]["uuid"], "outcome": "overridden", "outcomeTimestamp": datetime.now(UTC).isoformat()}]}
        ).status_code == 200
    trail = api.get("/api/v1/audit", params={"patient": api.pseudonym},  # type: ignore[attr-defined]
                    headers=principals.auditor()).json()["records"]
    by_action = {r["action"]: r for r in trail}
    assert {"cds.order-sign", "cds.patient-view", "cds.feedback"} <= set(by_action)
    sign = by_action["cds.order-sign"]
    assert (sign["institution"], sign["on_behalf_of"], sign["purpose"]) == (REQUESTER, "dr-liu", "order_check")
    assert sign["detail"]["cards"] == [c["uuid"] for c in cards]
    fed_back = {r["detail"]["card"]: r["on_behalf_of"] for r in trail if r["action"] == "cds.feedback"}
    assert fed_back == {cards[0]["uuid"]: "dr-wang", cards[1]["uuid"]: "dr-liu"}  # the header's, else the card's


def test_an_imaging_order_in_the_hospitals_ris_code_finds_a_prior_study(book, database, pseudonymizer,  # type: ignore[no-untyped-def]
                                                                        principals) -> None:
    from adapters.report import ImagingReport, Patient, Study

    now = datetime.now(UTC)
    report = ImagingReport(
        institution="zj-hz-002", result_id="ACC-CT-9", version=1, status="final", patient=Patient(RESIDENT_ID),
        reported_at=now - timedelta(days=2),
        study=Study("1.2.826.0.1.3680043.2.1125.9", "CT", accession_number="ACC-CT-9", body_part="HEAD",
                    technique="plain", description="头颅CT平扫", instance_count=120, study_at=now - timedelta(days=2)),
        findings="脑实质未见异常密度影。", impression="颅脑CT平扫未见异常。",
        retrieval={"ae_title": "HZPACS", "host": "pacs.example", "port": 104, "wado_rs": None})
    event = ResultPipeline(book, pseudonymizer).imaging_event(report, "dicom")
    with database.begin() as conn:
        ingest(conn, [Delivery(event)])
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    with TestClient(create_app(context)) as client:
        orders = {"resourceType": "Bundle", "type": "collection", "entry": [
            _service_request("ct", ("urn:hrx:ris:zj-hz-001", "CT-HEAD-P", "头颅CT平扫")),
            _service_request("dr", ("urn:hrx:ris:zj-hz-001", "DR-CHEST", "胸部正侧位片"))]}
        answer = client.post(f"/cds-services/{SIGN}", headers=principals.his("zj-hz-001"), json={
            "hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/dr-chen", "patientId": event["patient"]["pseudonym"],
                        "encounterId": "ZJ-E1", "draftOrders": orders}})
        [found] = _cards(answer)
    assert _order_of(found) == "ServiceRequest/ct"  # the chest X-ray has no prior
    assert book.items[event["item"]["unified_code"]].name_zh in found["summary"]
    assert found["links"][0]["url"] == "http://testserver/ui/results/zj-hz-002/ACC-CT-9"  # /ui beside the API
    assert "结果：" not in found["detail"]  # an imaging report has no values to list


def test_a_card_whose_result_was_withdrawn_since_cannot_be_accepted(api, book, database, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    cards = {_order_of(c): c["uuid"] for c in _cards(_hook(api, SIGN, "order-sign"))}
    withdrawn = replace(_report("R2", [("BJXCALT", 30.0, "U/L")], status="entered-in-error"), version=3)
    with database.begin() as conn:
        ingest(conn, [Delivery(ResultPipeline(book, pseudonymizer).lab_event(withdrawn, "fhir"))])
    refused = _feedback(api, SIGN, {"card": cards["ServiceRequest/alt"], "outcome": "accepted"})
    assert refused.status_code == 409 and refused.json()["field"] == "feedback[0].card"
    assert _decisions(database) == []  # and the card is still open: an override may follow
    assert _feedback(api, SIGN, {"card": cards["ServiceRequest/alt"], "outcome": "overridden",
                                 "overrideReason": _reason("07")}).status_code == 200

"""Calendar dates are Beijing dates (docs/rules.md, "Dates").

QC certificates and catalogue versions are dated in Beijing time, so their boundaries are tested at 00:00,
07:59, 08:00 and 23:59 Beijing time — the first eight hours of a Beijing day are the previous UTC day — and
the answer must not depend on the offset an instant is written in, nor on the machine's own time zone.
"""
from __future__ import annotations

from functools import cache

import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.report import Code, LabObservation, LabReport, Patient, Value

from adapters.pipeline import ResultPipeline
from adapters.publish import Publisher
from codes import CodeBook
from codes.calendar import BEIJING, beijing_date, beijing_minute
from exchange.api import Context, create_app
from exchange.recognize import Prior, Status, recognize
from exchange.store import Delivery, ingest
from schemas.resident_id import make_resident_id

NEW_YORK = "America/New_York"
EDGE_TIMES = ((0, 0), (7, 59), (8, 0), (23, 59))
#: The offsets an instant is written in: Beijing, UTC (as the store returns it) and New York in winter.
WRITTEN_IN = (BEIJING, UTC, timezone(timedelta(hours=-5)))


@pytest.fixture(params=["UTC", NEW_YORK], autouse=True)
def machine_tz(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run every test here with the machine's local zone set to UTC and to New York."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def beijing(day: date, hour: int, minute: int, written_in: timezone = BEIJING) -> datetime:
    """A Beijing wall-clock time, written in another offset when asked."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BEIJING).astimezone(written_in)


def status_of(world: CodeBook, requester: str, issuer: str, item: str, reported: datetime) -> Status:
    return recognize(world, Prior(issuer, item, "final", reported), requester, reported + timedelta(days=1)).status


@pytest.mark.parametrize("written_in", WRITTEN_IN, ids=str)
@pytest.mark.parametrize("hour, minute", EDGE_TIMES)
def test_a_certificates_last_day_counts_until_its_beijing_midnight(world, hour, minute, written_in) -> None:  # type: ignore[no-untyped-def]
    # bj-b1's provincial EQA certificate runs to 2026-03-31 (inclusive); province-bj asks for provincial QC.
    last, after = date(2026, 3, 31), date(2026, 4, 1)
    assert status_of(world, "bj-c1", "bj-b1", "L0045", beijing(last, hour, minute, written_in)) is Status.RECOGNIZABLE
    assert status_of(world, "bj-c1", "bj-b1", "L0045", beijing(after, hour, minute, written_in)) is Status.QC_NOT_MET


@pytest.mark.parametrize("written_in", WRITTEN_IN, ids=str)
@pytest.mark.parametrize("hour, minute", EDGE_TIMES)
def test_a_certificates_first_day_counts_from_its_beijing_midnight(world, hour, minute, written_in) -> None:  # type: ignore[no-untyped-def]
    # bj-c1's provincial certificate starts on 2026-04-01.
    before, first = date(2026, 3, 31), date(2026, 4, 1)
    assert status_of(world, "bj-b1", "bj-c1", "L0045", beijing(before, hour, minute, written_in)) is Status.QC_NOT_MET
    assert status_of(world, "bj-b1", "bj-c1", "L0045", beijing(first, hour, minute, written_in)) is Status.RECOGNIZABLE


@pytest.mark.parametrize("written_in", WRITTEN_IN, ids=str)
@pytest.mark.parametrize("hour, minute", EDGE_TIMES)
def test_a_catalogue_version_takes_over_at_beijing_midnight(world, hour, minute, written_in) -> None:  # type: ignore[no-untyped-def]
    # province-bj v1 is in force until 2026-01-01, v2 from then (Beijing dates).
    for day, version in ((date(2025, 12, 31), "v1"), (date(2026, 1, 1), "v2")):
        at = beijing(day, hour, minute, written_in)
        got = recognize(world, Prior("bj-a1", "L0045", "final", at - timedelta(days=1)), "bj-b1", at)
        assert (got.status, got.catalogue_id, got.catalogue_version) == (Status.RECOGNIZABLE, "province-bj", version)


def test_the_beijing_date_of_an_instant_ignores_the_machine_zone(machine_tz: str) -> None:
    instant = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)  # 07:30 on April 1st in Beijing
    assert beijing_date(instant) == date(2026, 4, 1)
    assert beijing_minute(instant) == "2026-04-01 07:30"
    with pytest.raises(ValueError):
        beijing_date(datetime(2026, 4, 1, 7, 30))


OFFSETS = st.integers(min_value=-12 * 4, max_value=14 * 4).map(lambda q: timezone(timedelta(minutes=15 * q)))
INSTANTS = st.datetimes(min_value=datetime(2025, 6, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC))
PAIRS = st.sampled_from([("bj-c1", "bj-b1", "L0045"), ("bj-b1", "bj-c1", "L0045"), ("bj-b1", "bj-a1", "L0045"),
                         ("bj-b1", "bj-a1", "L0032"), ("tj-t1", "he-s1", "L0032"), ("bj-a2", "bj-a1", "L0032")])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reported=INSTANTS, age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=90)),
       reported_offset=OFFSETS, at_offset=OFFSETS, pair=PAIRS)
def test_the_answer_does_not_depend_on_the_offset_an_instant_is_written_in(  # type: ignore[no-untyped-def]
        world, reported, age, reported_offset, at_offset, pair) -> None:
    requester, issuer, item = pair
    at = reported + age
    in_beijing = recognize(world, Prior(issuer, item, "final", reported.astimezone(BEIJING)), requester,
                           at.astimezone(BEIJING))
    elsewhere = recognize(world, Prior(issuer, item, "final", reported.astimezone(reported_offset)), requester,
                          at.astimezone(at_offset))
    assert (elsewhere.status, elsewhere.tier, elsewhere.catalogue_id, elsewhere.catalogue_version, elsewhere.via) == (
        in_beijing.status, in_beijing.tier, in_beijing.catalogue_id, in_beijing.catalogue_version, in_beijing.via)
    assert elsewhere.valid_until == in_beijing.valid_until  # the same instant…
    if elsewhere.valid_until is not None:  # …told in the requester's offset
        assert elsewhere.valid_until.utcoffset() == at_offset.utcoffset(None)
        assert in_beijing.valid_until.utcoffset() == timedelta(hours=8)
    assert [r.zh for r in elsewhere.reasons] == [r.zh for r in in_beijing.reasons]  # Chinese: Beijing time


def test_reasons_in_chinese_read_beijing_time_the_chinese_way(world) -> None:  # type: ignore[no-untyped-def]
    reported = datetime(2026, 3, 9, 23, 0, tzinfo=UTC)  # 2026-03-10 07:00 in Beijing
    ok = recognize(world, Prior("bj-a1", "L0033", "final", reported), "sc-c1", reported + timedelta(days=1))
    assert ok.status is Status.RECOGNIZABLE
    assert ok.reasons[0].zh.endswith("有效至 2026-05-09 07:00（北京时间）"), ok.reasons[0].zh
    assert "T" not in ok.reasons[0].zh.split("有效至")[1] and "+00:00" not in ok.reasons[0].zh
    late = recognize(world, Prior("bj-a1", "L0033", "final", reported), "sc-c1", reported + timedelta(days=61))
    assert late.status is Status.EXPIRED
    assert "2026-05-09 07:00 到期" in late.reasons[0].zh, late.reasons[0].zh
    qc = recognize(world, Prior("he-s1", "L0032", "final", reported), "tj-t1", reported + timedelta(days=1))
    assert qc.status is Status.QC_NOT_MET and "区域级及以上" in qc.reasons[0].zh and "region级" not in qc.reasons[0].zh


# -- through the store and the API, on both stores --------------------------------------------------------------

RESIDENT_ID = make_resident_id("11010519800312002")


def _store(world: CodeBook, database, pseudonymizer, issuer: str, result_id: str, reported: datetime) -> None:  # type: ignore[no-untyped-def]
    report = LabReport(
        institution=issuer, result_id=result_id, version=1, status="final", patient=Patient(RESIDENT_ID),
        codes=[Code("2823-3", "http://loinc.org")], reported_at=reported,
        observations=[LabObservation([Code("2823-3", "http://loinc.org")], Value("quantity", 4.1, unit="mmol/L"))])
    event = ResultPipeline(world, pseudonymizer).lab_event(report, "fhir")
    assert event["item"]["unified_code"] == "L0045"
    with database.begin() as conn:
        ingest(conn, [Delivery(event)])


@pytest.fixture
def world_api(world, database, pseudonymizer, principals) -> TestClient:  # type: ignore[no-untyped-def]
    """The API on the world code book; ``as_his(institution)``: that hospital's HIS headers, the patient in an
    open encounter there."""
    context = Context(book=world, database=database, pseudonymizer=pseudonymizer,
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="g")

    def as_his(institution: str) -> dict[str, str]:
        principals.encounter(pseudonymizer.pseudonym(RESIDENT_ID), institution, key=f"E-{institution}",
                             starts_at=datetime(2026, 1, 1, tzinfo=UTC))
        return principals.his(institution)

    client = TestClient(create_app(context))
    client.as_his = cache(as_his)  # type: ignore[attr-defined]
    return client


def test_the_check_judges_qc_by_the_beijing_date_on_both_stores(world, database, pseudonymizer,  # type: ignore[no-untyped-def]
                                                                 world_api) -> None:
    # 07:00 Beijing time is the previous UTC day: the day after bj-b1's certificate ended, and the first day
    # of bj-c1's.
    _store(world, database, pseudonymizer, "bj-b1", "after-last-day", datetime(2026, 4, 1, 7, 0, tzinfo=BEIJING))
    _store(world, database, pseudonymizer, "bj-c1", "first-day", datetime(2026, 4, 1, 7, 0, tzinfo=BEIJING))
    at = "2026-04-02T09:00:00+08:00"
    for requester, ref, expected in (("bj-c1", "bj-b1/after-last-day", "qc_not_met"),
                                     ("bj-b1", "bj-c1/first-day", "recognizable")):
        answer = world_api.post("/api/v1/recognition/check", headers=world_api.as_his(requester), json={
            "patient": {"resident_id": RESIDENT_ID}, "requesting_institution": requester, "at": at}).json()
        [entry] = [e for e in answer["results"] if e["result"]["ref"] == ref]
        assert entry["recognition"]["status"] == expected, entry["recognition"]["reasons"]


def test_answers_speak_the_requesters_offset_else_beijing_time(world, database, pseudonymizer,  # type: ignore[no-untyped-def]
                                                               world_api) -> None:
    reported = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    _store(world, database, pseudonymizer, "bj-a1", "offsets", reported)
    body = {"patient": {"resident_id": RESIDENT_ID}, "requesting_institution": "bj-b1"}
    for at, offset in ((None, "+08:00"), (datetime.now(UTC).astimezone(timezone(timedelta(hours=-5))), "-05:00"),
                       (datetime.now(UTC), "+00:00")):
        answer = world_api.post("/api/v1/recognition/check", headers=world_api.as_his("bj-b1"),
                                json={**body, **({"at": at.isoformat()} if at else {})}).json()
        [entry] = answer["results"]
        assert entry["recognition"]["status"] == "recognizable"
        for text in (answer["at"], entry["recognition"]["valid_until"], entry["result"]["reported_at"]):
            assert text.endswith(offset), (text, offset)
        assert datetime.fromisoformat(entry["result"]["reported_at"]) == reported
        assert "（北京时间）" in entry["recognition"]["reasons"][0]["zh"]


def test_the_timelines_date_filters_are_beijing_dates(world, database, pseudonymizer, world_api) -> None:  # type: ignore[no-untyped-def]
    _store(world, database, pseudonymizer, "bj-a1", "early-morning", datetime(2026, 4, 1, 7, 0, tzinfo=BEIJING))
    pseudonym = pseudonymizer.pseudonym(RESIDENT_ID)
    url = f"/api/v1/patients/{pseudonym}/results"
    on_the_day = world_api.get(url, params={"date_from": "2026-04-01", "date_to": "2026-04-01"},
                               headers=world_api.as_his("bj-a1")).json()
    assert [r["ref"] for r in on_the_day["results"]] == ["bj-a1/early-morning"]
    assert on_the_day["results"][0]["reported_at"] == "2026-04-01T07:00:00+08:00"
    day_before = world_api.get(url, params={"date_from": "2026-03-31", "date_to": "2026-03-31"},
                               headers=world_api.as_his("bj-a1")).json()
    assert day_before["results"] == []


def _fhir_bundle(issuer: str, report_id: str, issued: str) -> dict[str, object]:
    """A FHIR R4 collection Bundle as a hospital sends it: instants written in +08:00."""
    patient = {"resourceType": "Patient", "id": "p",
               "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": RESIDENT_ID}]}
    org = {"resourceType": "Organization", "id": "o", "identifier": [{"system": "urn:hrx:institution", "value": issuer}]}
    potassium = {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]}
    obs = {"resourceType": "Observation", "id": "k", "status": "final", "code": potassium,
           "subject": {"reference": "Patient/p"}, "issued": issued,
           "valueQuantity": {"value": 4.1, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}}
    report = {"resourceType": "DiagnosticReport", "id": "r", "status": "final", "code": potassium,
              "identifier": [{"system": f"urn:hrx:report-id:{issuer}", "value": report_id}],
              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
              "subject": {"reference": "Patient/p"}, "performer": [{"reference": "Organization/o"}],
              "effectiveDateTime": issued, "issued": issued, "result": [{"reference": "Observation/k"}]}
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"http://{issuer}.example/fhir/{r['resourceType']}/{r['id']}", "resource": r}
                      for r in (org, patient, report, obs)]}


def test_a_bundle_issued_at_0700_beijing_time_is_judged_on_its_beijing_day(world, database, pseudonymizer,  # type: ignore[no-untyped-def]
                                                                           world_api) -> None:
    # The case the bug was found with: instants in +08:00 through the FHIR adapter, 07:00 on 2026-04-01 Beijing
    # time (still 2026-03-31 in UTC) — the day after bj-b1's certificate ended, the first day of bj-c1's.
    from adapters.fhir.reports import bundle_events

    pipeline = ResultPipeline(world, pseudonymizer)
    for issuer in ("bj-b1", "bj-c1"):
        events = bundle_events(pipeline, _fhir_bundle(issuer, f"{issuer}-0700", "2026-04-01T07:00:00+08:00"))
        with database.begin() as conn:
            ingest(conn, [Delivery(event) for event in events])
    for requester, issuer, expected in (("bj-c1", "bj-b1", "qc_not_met"), ("bj-b1", "bj-c1", "recognizable")):
        answer = world_api.post("/api/v1/recognition/check", headers=world_api.as_his(requester), json={
            "patient": {"resident_id": RESIDENT_ID}, "requesting_institution": requester,
            "at": "2026-04-02T09:00:00+08:00"}).json()
        [entry] = [e for e in answer["results"] if e["result"]["ref"].startswith(f"{issuer}/")]
        assert entry["recognition"]["status"] == expected, entry["recognition"]["reasons"]
        assert entry["result"]["reported_at"] == "2026-04-01T07:00:00+08:00"

"""The operator's dashboard figures: drill-down of GET /stats, the recognition rate per day or week, catalogue
coverage against the tiers' targets, and every table as CSV or Excel, on both stores."""
from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert

from codes.calendar import BEIJING, beijing_midnight
from codes.sources import csv_rows
from codes.targets import TARGETS_FILE
from codes.tools import coverage
from exchange.api import Context, create_app
from exchange.store.models import Decision, Presentation
from tests.fakes import FakePublisher
from tests.fixtures.principals import Principals

REQUESTER, ISSUER, OTHER_ISSUER = "bj-chaoyang-001", "bj-xicheng-001", "bj-haidian-001"
DAY1 = beijing_midnight(date(2026, 11, 16))  # a Monday
DAY2 = DAY1 + timedelta(days=1)


@dataclass
class Desk:
    client: TestClient
    operator: dict[str, str]
    who: Principals


def _presented(issuer: str, result_id: str, item: str, at: datetime) -> dict[str, object]:
    return {"check_id": str(uuid.uuid4()), "requesting_institution": REQUESTER, "encounter_key": "E1",
            "patient": "a" * 64, "result_issuer": issuer, "result_id": result_id, "result_version": 1,
            "item_code": item, "tier": "province", "trigger": "encounter", "presented_at": at}


def _decided(issuer: str, result_id: str, item: str, decision: str, at: datetime, reason: str | None = None,
             revokes: str | None = None) -> dict[str, object]:
    return {"decision_id": str(uuid.uuid4()), "result_issuer": issuer, "result_id": result_id, "result_version": 1,
            "item_code": item, "patient": "a" * 64, "requesting_institution": REQUESTER, "clinician_id": "dr-wang",
            "encounter_id": "E1", "order_id": None, "trigger": "encounter", "decision": decision,
            "reason_code": reason, "note": None, "revokes": revokes, "decided_at": at, "published_at": at}


@pytest.fixture
def desk(book, database: Engine, pseudonymizer, principals: Principals) -> Iterator[Desk]:  # type: ignore[no-untyped-def]
    """Day 1: three results shown, one accepted. Day 2: two shown, one rejected for 06 (counts), one for 99
    (does not), and an acceptance of day 1 revoked on day 2's evening is replaced by nothing."""
    revoked = _decided(OTHER_ISSUER, "R3", "L0001", "accept", DAY1 + timedelta(hours=11))
    with database.begin() as conn:
        conn.execute(insert(Presentation), [
            _presented(ISSUER, "R1", "L0032", DAY1 + timedelta(hours=9)),
            _presented(ISSUER, "R2", "L0045", DAY1 + timedelta(hours=9)),
            _presented(OTHER_ISSUER, "R3", "L0001", DAY1 + timedelta(hours=10)),
            _presented(ISSUER, "R4", "L0032", DAY2 + timedelta(hours=9)),
            _presented(ISSUER, "R5", "L0045", DAY2 + timedelta(hours=9))])
        conn.execute(insert(Decision), [
            _decided(ISSUER, "R1", "L0032", "accept", DAY1 + timedelta(hours=10)), revoked,
            _decided(ISSUER, "R4", "L0032", "reject", DAY2 + timedelta(hours=10), "06"),
            _decided(ISSUER, "R5", "L0045", "reject", DAY2 + timedelta(hours=10), "99"),
            _decided(OTHER_ISSUER, "R3", "L0001", "revoke", DAY2 + timedelta(hours=20),
                     revokes=str(revoked["decision_id"]))])
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    with TestClient(create_app(context)) as client:
        yield Desk(client, principals.operator(), principals)


PERIOD = {"from": DAY1.isoformat(), "to": (DAY1 + timedelta(days=7)).isoformat()}


def test_the_series_per_day_adds_up_to_the_period_and_per_week_to_one_bucket(desk: Desk, book) -> None:  # type: ignore[no-untyped-def]
    whole = desk.client.get("/api/v1/stats", params={**PERIOD, "scope": "11"}, headers=desk.operator).json()
    daily = desk.client.get("/api/v1/stats/timeseries", params={**PERIOD, "scope": "11"}, headers=desk.operator)
    assert daily.status_code == 200, daily.text
    series = daily.json()["series"]
    assert [b["start"] for b in series] == [(DAY1 + timedelta(days=n)).date().isoformat() for n in range(7)]
    for name in ("presented", "accepted", "rejected", "excluded_from_denominator"):
        assert sum(b[name] for b in series) == whole[name]
    assert sum(b["avoided_cost_cny"] for b in series) == whole["avoided_cost_cny"]
    first, second = series[0], series[1]
    assert (first["presented"], first["accepted"], second["presented"], second["rejected"]) == (3, 1, 2, 2)
    assert first["recognition_rate"] == round(1 / 3, 4)  # the revoked acceptance no longer counts
    assert second["rejected_by_reason"] == {"06": 1, "99": 1}
    assert second["recognition_rate"] == 0.0 and series[2]["recognition_rate"] is None
    price = float(book.price("L0032", book.institutions[REQUESTER].province))
    assert first["avoided_cost_cny"] == price == whole["avoided_cost_cny"]
    weekly = desk.client.get("/api/v1/stats/timeseries", params={**PERIOD, "scope": "11", "bucket": "week"},
                             headers=desk.operator).json()["series"]
    assert len(weekly) == 1 and weekly[0]["start"] == DAY1.date().isoformat()
    assert weekly[0]["recognition_rate"] == whole["recognition_rate"] == round(1 / (5 - 1), 4)


def test_drill_down_by_issuer_and_item(desk: Desk) -> None:
    whole = desk.client.get("/api/v1/stats", params=PERIOD, headers=desk.operator).json()
    one = desk.client.get("/api/v1/stats", params={**PERIOD, "issuer": ISSUER}, headers=desk.operator).json()
    assert list(one["per_issuer"]) == [ISSUER] and one["per_issuer"][ISSUER] == whole["per_issuer"][ISSUER]
    assert sum(c.get("presented", 0) for c in one["per_item"].values()) == whole["per_issuer"][ISSUER]["presented"]
    assert one["avoided_cost_per_issuer"] == {ISSUER: whole["avoided_cost_per_issuer"][ISSUER]}
    glucose = desk.client.get("/api/v1/stats/timeseries", params={**PERIOD, "item": "L0032"},
                              headers=desk.operator).json()["series"]
    assert [(b["presented"], b["accepted"], b["rejected"]) for b in glucose[:2]] == [(1, 1, 0), (1, 0, 1)]
    refused = [desk.client.get("/api/v1/stats", params={**PERIOD, **p}, headers=desk.operator)
               for p in ({"issuer": "nowhere"}, {"item": "L9999"})]
    assert [(r.status_code, r.json()["field"]) for r in refused] == [(422, "issuer"), (422, "item")]
    too_long = desk.client.get("/api/v1/stats/timeseries", params={"from": "2020-01-01T00:00:00+08:00",
                                                                   "to": "2026-01-01T00:00:00+08:00"},
                               headers=desk.operator)
    assert (too_long.status_code, too_long.json()["field"]) == (422, "from")


def test_stats_tables_as_csv_and_excel(desk: Desk, book) -> None:  # type: ignore[no-untyped-def]
    from openpyxl import load_workbook

    whole = desk.client.get("/api/v1/stats", params=PERIOD, headers=desk.operator).json()
    issuers = desk.client.get("/api/v1/stats", params={**PERIOD, "format": "csv"}, headers=desk.operator)
    assert issuers.headers["content-disposition"] == 'attachment; filename="per-issuer.csv"'
    text = issuers.content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["issuer"] for r in rows] == list(whole["per_issuer"])
    assert rows[0]["name_zh"] == book.institutions[rows[0]["issuer"]].name_zh  # Chinese, readable in Excel
    reasons = desk.client.get("/api/v1/stats", params={**PERIOD, "format": "xlsx", "table": "rejected_by_reason"},
                              headers=desk.operator)
    sheet = list(load_workbook(io.BytesIO(reasons.content)).active.values)
    assert [(r[0], r[2]) for r in sheet[1:]] == [(code, r["count"]) for code, r in whole["rejected_by_reason"].items()]
    series = desk.client.get("/api/v1/stats/timeseries", params=PERIOD,
                             headers={**desk.operator, "Accept": "text/csv"})
    assert len(list(csv.DictReader(io.StringIO(series.content.decode("utf-8-sig"))))) == 7


def test_coverage_against_the_targets_inside_the_operators_scope(desk: Desk, book) -> None:  # type: ignore[no-untyped-def]
    at = datetime(2026, 11, 20, tzinfo=BEIJING)
    targets = {row["tier"]: row for _, row in csv_rows(TARGETS_FILE)}
    everything = desk.client.get("/api/v1/stats/coverage", params={"at": at.isoformat()}, headers=desk.operator)
    assert everything.status_code == 200, everything.text
    rows = {(r["tier"], r["scope"]): r for r in everything.json()["rows"]}
    assert set(rows) == {(r.tier, r.scope) for r in coverage(book, at)}
    for row in rows.values():
        target = targets[row["tier"]]
        assert row["target"]["due"] == target["due"]
        if target["all_items"] == "yes":
            assert row["meets"] == (row["total"] == len(book.items))
        elif target["more_than"]:
            goal = int(target["more_than"])
            assert (row["meets"], row["gap"]) == (row["total"] > goal, max(0, goal + 1 - row["total"]))
        else:
            assert row["meets"] is None and row["gap"] is None
    beijing = desk.client.get("/api/v1/stats/coverage", params={"at": at.isoformat()},
                              headers=desk.who.operator(scope="11")).json()
    scopes = {(r["tier"], r["scope"]) for r in beijing["rows"]}
    assert ("province", "110000") in scopes and ("region", "jjj") in scopes and ("province", "330000") not in scopes
    later = desk.client.get("/api/v1/stats/coverage", params={"at": "2028-03-01T00:00:00+08:00"},
                            headers=desk.operator).json()["rows"]
    assert all(r["overdue"] == (r["meets"] is False) for r in later)  # every due date has passed by 2028 …
    assert any(r["overdue"] for r in later)
    assert not any(r["overdue"] for r in rows.values() if r["target"]["due"] > "2026-11-20")  # … not before
    exported = desk.client.get("/api/v1/stats/coverage", params={"at": at.isoformat(), "format": "csv"},
                               headers=desk.operator)
    assert len(list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))) == len(rows)
    assert desk.client.get("/api/v1/stats/coverage", headers=desk.who.auditor()).status_code == 403
    assert desk.client.get("/api/v1/stats/coverage", params={"scope": "33"},
                           headers=desk.who.operator(scope="11")).status_code == 403

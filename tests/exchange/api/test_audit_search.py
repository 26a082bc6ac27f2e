"""The auditor's search of the audit by period (``since``/``until``), in the query on both stores: a bare date is a
whole Beijing day, an instant is taken with its offset, and a scoped auditor's limit counts only records the
auditor may see (exchange/api/oversight.py, exchange/audit.py)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exchange import audit
from exchange.api import Context, create_app
from tests.fakes import FakePublisher
from tests.fixtures.principals import Principals

PATIENT = "c" * 64
READER = "dr-period"  # the one principal these records are of: the search names it, leaving logins and listings out
BEIJING_HOSPITAL = "bj-chaoyang-001"
SHANGHAI_HOSPITAL = "sh-xuhui-001"

#: Reads around the Beijing day 2026-12-01 (UTC+08:00), by name. ``after_midnight`` is still 2026-12-01 in UTC:
#: a period read as UTC days would wrongly hold it.
READS = {
    "day_before": "2026-11-30T23:59:59+08:00",
    "first_instant": "2026-12-01T00:00:00+08:00",
    "late_evening": "2026-12-01T23:30:00+08:00",
    "after_midnight": "2026-12-02T00:10:00+08:00",
}


@dataclass
class Desk:
    client: TestClient
    who: Principals


class _PinnedClock(datetime):
    """``datetime`` whose ``now`` is a chosen instant: a record written "then" through the real write path."""

    pinned: datetime

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return cls.pinned.astimezone(tz)


def _read_at(database: Engine, monkeypatch: pytest.MonkeyPatch, when: str, institution: str, name: str) -> None:
    _PinnedClock.pinned = datetime.fromisoformat(when)
    with monkeypatch.context() as patched:
        patched.setattr(audit, "datetime", _PinnedClock)
        with database.begin() as conn:
            audit.record(conn, audit.Actor(READER, institution, "treatment", role="clinician"), "patient.results",
                         PATIENT, {"read": name})


@pytest.fixture
def desk(database: Engine, pseudonymizer, principals: Principals,  # type: ignore[no-untyped-def]
         monkeypatch: pytest.MonkeyPatch, book) -> Iterator[Desk]:
    for name, when in READS.items():
        _read_at(database, monkeypatch, when, BEIJING_HOSPITAL, name)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    with TestClient(create_app(context)) as client:
        yield Desk(client, principals)


def _found(desk: Desk, headers: dict[str, str] | None = None, **params: str) -> list[str]:
    answer = desk.client.get("/api/v1/audit", params={"principal": READER, **params},
                             headers=headers or desk.who.auditor())
    assert answer.status_code == 200, answer.text
    return [r["detail"]["read"] for r in answer.json()["records"]]


def test_a_bare_date_is_the_whole_beijing_day(desk: Desk) -> None:
    assert _found(desk) == ["after_midnight", "late_evening", "first_instant", "day_before"]  # newest first
    assert _found(desk, since="2026-12-01", until="2026-12-01") == ["late_evening", "first_instant"]
    assert _found(desk, since="2026-12-02") == ["after_midnight"]
    assert _found(desk, until="2026-11-30") == ["day_before"]
    assert _found(desk, since="2026-12-03") == []


def test_an_instant_is_taken_with_its_offset_and_both_bounds_are_included(desk: Desk) -> None:
    assert _found(desk, since=READS["late_evening"], until=READS["after_midnight"]) == ["after_midnight",
                                                                                      "late_evening"]
    assert _found(desk, since="2026-12-01T23:30:00.000001+08:00", until="2026-12-02T00:09:59+08:00") == []
    assert _found(desk, since="2026-12-01T16:00:00Z") == ["after_midnight"]  # 00:00 in Beijing
    assert _found(desk, since="2026-12-01", until="2026-12-01T15:30:00+00:00") == ["late_evening", "first_instant"]


def test_the_limit_counts_records_inside_the_period(desk: Desk) -> None:
    assert _found(desk, since="2026-12-01", until="2026-12-01", limit="1") == ["late_evening"]
    assert _found(desk, until="2026-11-30", limit="1") == ["day_before"]  # not cut off by newer records


@pytest.mark.parametrize("params, field", [
    ({"since": "2026-12-01T10:00:00"}, "since"),  # no offset: ambiguous
    ({"until": "yesterday"}, "until"),
    ({"since": "2026-13-01"}, "since"),
    ({"until": "9999-12-31"}, "until"),  # the day after does not exist
    ({"since": "2026-12-02", "until": "2026-12-01"}, "since"),
])
def test_a_bound_that_names_no_instant_is_refused_with_its_field(desk: Desk, params: dict[str, str],
                                                                  field: str) -> None:
    refused = desk.client.get("/api/v1/audit", params=params, headers=desk.who.auditor())
    assert (refused.status_code, refused.json()["field"]) == (422, field)


def test_a_scoped_auditor_sees_and_counts_only_records_inside_the_scope(
        desk: Desk, database: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(3):  # newer than every Beijing read
        _read_at(database, monkeypatch, f"2026-12-01T23:4{n}:00+08:00", SHANGHAI_HOSPITAL, f"shanghai-{n}")
    national = _found(desk, since="2026-12-01", until="2026-12-01")
    assert national == ["shanghai-2", "shanghai-1", "shanghai-0", "late_evening", "first_instant"]
    beijing = desk.who.auditor(scope="11")
    assert _found(desk, beijing, since="2026-12-01", until="2026-12-01") == ["late_evening", "first_instant"]
    assert _found(desk, beijing, since="2026-12-01", until="2026-12-01", limit="1") == ["late_evening"]
    assert _found(desk, desk.who.auditor(scope="31"), since="2026-12-01", limit="2") == ["shanghai-2", "shanghai-1"]


def test_the_listing_records_the_period_asked_for(desk: Desk) -> None:
    _found(desk, since="2026-12-01", until="2026-12-01T12:00:00+08:00")
    listing = desk.client.get("/api/v1/audit", params={"principal": "auditor-national", "limit": "1"},
                              headers=desk.who.auditor()).json()["records"][0]
    assert listing["action"] == "audit.read"
    assert (listing["detail"]["since"], listing["detail"]["until"]) == ("2026-12-01", "2026-12-01T12:00:00+08:00")

"""exchange/conflicts.py: events about to be published against the stored results (both stores)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import insert

from adapters.fhir import BuiltEvent, build_events
from adapters.pipeline import ResultPipeline
from exchange.conflicts import check_against_store, find_conflicts
from schemas.content import content_digest
from exchange.store.models import Result
from schemas.events import parse_timestamp
from tests.adapters.fhir_examples import example, localise, reports


@pytest.fixture
def pipeline(book, pseudonymizer) -> ResultPipeline:  # type: ignore[no-untyped-def]
    return ResultPipeline(book, pseudonymizer)


def stored(database, event: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """Put one event in the store as the engine keeps it (the row's event column is the event's JSON)."""
    with database.begin() as conn:
        conn.execute(insert(Result).values(
            issuer=event["issuer"], result_id=event["result_id"], version=event["version"],
            kind="lab" if event["schema"] == "hr.lab-result.v1" else "imaging", status=event["status"],
            patient=event["patient"]["pseudonym"], unified_code=event["item"]["unified_code"],
            local_code=event["item"]["local_code"], mapping_version=event["item"]["mapping_version"],
            reported_at=parse_timestamp(event["reported_at"]), stored_at=datetime.now(UTC),
            event=orjson.dumps(event).decode()))


def built(pipeline: ResultPipeline, bundle: dict[str, Any]) -> list[BuiltEvent]:
    return build_events(pipeline, bundle)


def _cbc(version_id: str | None = None, status: str = "final") -> dict[str, Any]:
    bundle = localise(example("Bundle-101"))
    report = reports(bundle)[0]
    report["status"] = status
    if version_id is not None:
        report["meta"] = {"versionId": version_id}
    return bundle


def test_a_resend_is_no_conflict_whatever_its_envelope(database, pipeline, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    [first] = built(pipeline, _cbc())
    stored(database, first.event)
    # Another event id, another receipt time and Bundle id, the same instants in another offset.
    later = ResultPipeline(book, pseudonymizer, received_at=datetime(2030, 1, 1, tzinfo=UTC))
    bundle = _cbc()
    bundle["identifier"] = {"system": "urn:example", "value": "resend-2"}
    reports(bundle)[0]["issued"] = "2011-03-04T00:45:33Z"  # 11:45:33+11:00
    [again] = built(later, bundle)
    assert again.event["event_id"] != first.event["event_id"]
    with database.connect() as conn:
        check = check_against_store(conn, [again])
    assert check.conflicts == [] and check.resent == {(again.event["issuer"], again.event["result_id"], 2)}


def test_the_same_key_with_other_content_is_a_conflict(database, pipeline) -> None:  # type: ignore[no-untyped-def]
    """Bundle-101 (CBC) and Bundle-lipids carry the same report identifier: the second is not a resend."""
    [cbc] = built(pipeline, localise(example("Bundle-101")))
    stored(database, cbc.event)
    [lipids] = built(pipeline, localise(example("Bundle-lipids")))
    other_patient = built(pipeline, localise(example("Bundle-101"), resident_id="11010519491231002X"))
    with database.connect() as conn:
        conflicts = find_conflicts(conn, [lipids, *other_patient])
    assert [(c.kind, c.version, c.highest_stored, c.location) for c in conflicts] == [
        ("content", 2, 2, "Bundle.entry[0].resource"), ("content", 2, 2, "Bundle.entry[0].resource")]
    assert "already stored with different content" in conflicts[0].message
    assert "send meta.versionId greater than 2" in conflicts[0].message
    assert "11010519491231002X" not in conflicts[1].message


def test_a_status_rank_under_a_higher_stored_version_is_refused(database, pipeline) -> None:  # type: ignore[no-untyped-def]
    [v5] = built(pipeline, _cbc("5", "corrected"))
    stored(database, v5.event)
    [rank] = built(pipeline, _cbc(None, "corrected"))  # version 3 from its status, content changed or not
    [explicit] = built(pipeline, _cbc("6", "corrected"))
    [stale] = built(pipeline, _cbc("4", "corrected"))  # an explicit older version: the sender's own record
    with database.connect() as conn:
        conflicts = find_conflicts(conn, [rank, explicit, stale])
    [conflict] = conflicts
    assert (conflict.kind, conflict.version, conflict.highest_stored) == ("version", 3, 5)
    assert "send meta.versionId greater than 5" in conflict.message


def test_two_reports_of_one_submission_with_one_key_conflict(database, pipeline) -> None:  # type: ignore[no-untyped-def]
    [cbc] = built(pipeline, localise(example("Bundle-101")))
    [lipids] = built(pipeline, localise(example("Bundle-lipids")))
    twin = replace(cbc, location="Bundle.entry[1].resource")
    with database.connect() as conn:
        assert find_conflicts(conn, [cbc, twin]) == []
        [conflict] = find_conflicts(conn, [cbc, lipids])
    assert "appears twice in this submission" in conflict.message


def test_the_digest_ignores_mapping_and_keeps_values_as_sent(pipeline) -> None:  # type: ignore[no-untyped-def]
    [event] = [b.event for b in built(pipeline, localise(example("Bundle-101")))]
    remapped = copy.deepcopy(event)
    for obs in remapped["observations"]:
        obs["item"].update(unified_code=None, mapping_version="2030-01", mapping_issue="no mapping",
                           mapping_issue_code="unknown_code", mapping_issue_zh="未映射")
    assert content_digest(remapped) == content_digest(event)
    converted = copy.deepcopy(event)
    first = converted["observations"][0]
    first["original"] = {"value": first["value"], "unit": first["unit"],
                         "reference_range": first["reference_range"]}
    first["value"], first["unit"], first["reference_range"] = first["value"] / 10, "g/dL", None
    assert content_digest(converted) == content_digest(event)
    changed = copy.deepcopy(event)
    changed["observations"][0]["value"] = 1.0
    assert content_digest(changed) != content_digest(event)


def test_many_keys_are_looked_up_in_bounded_statements(database, pipeline, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import exchange.conflicts as conflicts

    monkeypatch.setattr(conflicts, "KEYS_PER_QUERY", 3)
    [cbc] = built(pipeline, localise(example("Bundle-101")))

    @dataclass(frozen=True)
    class Numbered:
        event: dict[str, Any]
        version_explicit: bool = False
        location: str | None = None

    numbered = [Numbered({**cbc.event, "result_id": f"R{i}"}) for i in range(10)]
    stored(database, numbered[7].event)
    changed = Numbered({**numbered[7].event, "status": "preliminary"})
    with database.connect() as conn:
        check = check_against_store(conn, [*numbered, changed])
    assert check.resent == {(cbc.event["issuer"], "R7", 2)} and len(check.conflicts) == 1

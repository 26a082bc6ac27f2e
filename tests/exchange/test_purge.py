"""Retention in the store (exchange/purge.py), on both backends: resolved dead letters and results past their
horizon go, everything else stays; a dry run removes nothing; a second run removes nothing more. The policies'
settings (an audit retention under 3 years refused) and ``hrx purge`` itself."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from adapters.pipeline import ResultPipeline
from exchange.config import AUDIT_MINIMUM_DAYS, Retention, Settings
from exchange.engine import CONFLICT
from exchange.purge import purge_dead_letters, purge_results
from exchange.store import Delivery, connect, ingest, migrate, record_dead_letter
from exchange.store.models import DeadLetter, Observation, Result, ResultHead
from tests.exchange.api.test_decisions import _report

LATER = datetime.now(UTC) + timedelta(days=100)  # "now" of a purge run 100 days from today


def _stored(database, pipeline: ResultPipeline, *reports) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    events = [pipeline.lab_event(r, "fhir") for r in reports]
    with database.begin() as conn:
        ingest(conn, [Delivery(e) for e in events])
    return events


def _count(database, model) -> int:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


def test_resolved_dead_letters_go_once_old_enough_the_others_stay(database, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    pipeline = ResultPipeline(book, pseudonymizer)
    [r1] = _stored(database, pipeline, _report("R1", [("BJXCGLU", 99.0, "mg/dL")]))  # stored as version 2
    unstored = pipeline.lab_event(_report("R9", [("BJXCGLU", 98.0, "mg/dL")]), "fhir")
    older = {**r1, "version": 1}
    letters = [
        (orjson.dumps(r1).decode(), "the store was away"),  # stored since at that version: resolved
        (orjson.dumps(r1).decode(), f"result 'R1' of x version 2 {CONFLICT}"),  # the losing content: kept
        (orjson.dumps(older).decode(), f"result 'R1' of x version 1 {CONFLICT}"),  # a later version came: resolved
        (orjson.dumps(unstored).decode(), "unknown pseudonym key id"),  # never stored: kept
        ("not json", "not an event"),  # names no result: kept
    ]
    with database.begin() as conn:
        for offset, (payload, error) in enumerate(letters):
            record_dead_letter(conn, "hr.results.lab.v1", 0, offset, error, payload)

    recent = purge_dead_letters(database, 90, dry_run=False, now=datetime.now(UTC))
    assert recent.found == 0 and _count(database, DeadLetter) == 5  # not old enough yet
    dry = purge_dead_letters(database, 90, dry_run=True, now=LATER)
    assert dry.found == 2 and _count(database, DeadLetter) == 5
    done = purge_dead_letters(database, 90, dry_run=False, now=LATER)
    assert done.found == 2
    with database.connect() as conn:
        kept = sorted(conn.scalars(select(DeadLetter.offset)))
    assert kept == [1, 3, 4]
    assert purge_dead_letters(database, 90, dry_run=False, now=LATER).found == 0  # idempotent
    assert purge_dead_letters(database, None, dry_run=False, now=LATER).policy.endswith("keep")


def test_results_past_the_horizon_go_with_every_version_and_value(database, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    pipeline = ResultPipeline(book, pseudonymizer)
    old = _report("OLD", [("BJXCGLU", 99.0, "mg/dL"), ("BJXCK", 4.1, "mmol/L")], hours_ago=24 * 400)
    _stored(database, pipeline, old, replace(old, version=3),
            _report("NEW", [("BJXCALT", 30.0, "U/L")], hours_ago=24))
    assert (_count(database, Result), _count(database, ResultHead)) == (3, 2)

    assert purge_results(database, None, dry_run=False, now=datetime.now(UTC)).found == 0  # default: keep
    assert _count(database, Result) == 3
    dry = purge_results(database, 365, dry_run=True, now=datetime.now(UTC))
    assert dry.found == 1 and _count(database, Result) == 3
    done = purge_results(database, 365, dry_run=False, now=datetime.now(UTC))
    assert done.found == 1
    with database.connect() as conn:
        assert list(conn.scalars(select(Result.result_id))) == ["NEW"]
        assert list(conn.scalars(select(ResultHead.result_id))) == ["NEW"]
        remaining = conn.scalar(select(func.count()).select_from(Observation))
    assert remaining == 1  # NEW's one value; OLD's four (two per version) are gone
    assert purge_results(database, 365, dry_run=False, now=datetime.now(UTC)).found == 0


def test_an_audit_retention_under_three_years_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"HRX_RETAIN_AUDIT_DAYS=365 is shorter than the 1096 days \(3 years\).*PIPL"):
        Settings.from_env({"HRX_RETAIN_AUDIT_DAYS": "365"}, stack=False)
    assert Retention(audit_days=AUDIT_MINIMUM_DAYS).audit_days == AUDIT_MINIMUM_DAYS
    assert Settings.from_env({"HRX_RETAIN_RESULTS_DAYS": "3650"}, stack=False).retention.results_days == 3650
    assert Settings.from_env({"HRX_RETAIN_DICOM_SPOOL_DAYS": "keep"}, stack=False).retention.dicom_spool_days is None
    with pytest.raises(ValueError, match="HRX_RETAIN_HL7_ACK_DAYS must be a number of days"):
        Settings.from_env({"HRX_RETAIN_HL7_ACK_DAYS": "soon"}, stack=False)


def test_hrx_purge_is_a_dry_run_unless_applied_and_refuses_a_short_audit_retention(tmp_path: Path, book,  # type: ignore[no-untyped-def]
                                                                                  pseudonymizer) -> None:
    from exchange.cli import main

    database = connect(f"sqlite:///{tmp_path / 'var' / 'hrx.db'}")
    migrate(database)
    old = _report("OLD", [("BJXCGLU", 99.0, "mg/dL")], hours_ago=24 * 40)
    _stored(database, ResultPipeline(book, pseudonymizer), old)
    env = {"HRX_VAR_DIR": str(tmp_path / "var"), "HRX_RETAIN_RESULTS_DAYS": "30"}
    runner = CliRunner()
    dry = runner.invoke(main, ["purge"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "results: would remove 1 result(s)" in dry.output and "audit records: would remove 0" in dry.output
    assert _count(database, Result) == 1
    applied = runner.invoke(main, ["purge", "--apply"], env=env)
    assert applied.exit_code == 0 and "results: removed 1 result(s)" in applied.output, applied.output
    assert _count(database, Result) == 0
    again = runner.invoke(main, ["purge", "--apply"], env=env)
    assert "results: removed 0 result(s)" in again.output
    refused = runner.invoke(main, ["purge", "--apply"], env={**env, "HRX_RETAIN_AUDIT_DAYS": "100"})
    assert refused.exit_code == 2 and "3 years" in refused.output and "PIPL" in refused.output


def test_hrx_purge_prunes_only_a_store_at_the_current_migration(tmp_path: Path) -> None:
    from exchange.cli import main

    var = tmp_path / "var"
    runner = CliRunner()
    nothing = runner.invoke(main, ["purge", "--apply"], env={"HRX_VAR_DIR": str(var)})
    assert nothing.exit_code == 0 and "store: none at" in nothing.output and not (var / "hrx.db").exists()
    connect(f"sqlite:///{var / 'hrx.db'}").dispose()
    (var / "hrx.db").touch()  # a store no migration ran on
    refused = runner.invoke(main, ["purge", "--apply"], env={"HRX_VAR_DIR": str(var)})
    assert refused.exit_code != 0 and "never migrated" in refused.output and "hrx migrate" in refused.output

"""The store's idempotent writes, on SQLite and PostgreSQL."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from exchange.store import Delivery, current_results, ingest, record_dead_letter
from exchange.store.models import Base, DeadLetter, Observation, Result
from tests.events import lab_event


def _count(database, model) -> int:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_migrations_match_the_models(database) -> None:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_redelivery_stores_nothing_new(database) -> None:  # type: ignore[no-untyped-def]
    event = lab_event()
    with database.begin() as conn:
        first = ingest(conn, [Delivery(event, "t", 0, 1)])
    with database.begin() as conn:
        again = ingest(conn, [Delivery(event, "t", 0, 1), Delivery(dict(event, event_id="other"), "t", 0, 2)])
    assert (first.stored, again.stored, again.duplicates) == (1, 0, 2)
    assert _count(database, Result) == 1 and _count(database, Observation) == 1


def test_correction_replaces_and_stale_resend_does_not(database) -> None:  # type: ignore[no-untyped-def]
    patient = "b" * 64
    original = lab_event(patient=patient, version=1, value=4.2)
    corrected = lab_event(patient=patient, version=2, status="corrected", value=5.0)
    with database.begin() as conn:
        ingest(conn, [Delivery(original)])
        ingest(conn, [Delivery(corrected)])
    with database.connect() as conn:
        shown = current_results(conn, patient)
    assert [(r.version, r.status, r.observations[0].value) for r in shown] == [(2, "corrected", 5.0)]
    # A stale resend of version 1 that arrives after the correction is not stored twice and not shown.
    with database.begin() as conn:
        report = ingest(conn, [Delivery(dict(original, event_id="resent"))])
    assert report.duplicates == 1
    # A late first delivery of an older version (never seen before) is kept but does not move the head.
    older = lab_event(patient=patient, version=1, result_id="R2")
    newer = lab_event(patient=patient, version=3, result_id="R2", status="amended")
    with database.begin() as conn:
        ingest(conn, [Delivery(newer)])
        late = ingest(conn, [Delivery(older)])
    assert late.superseded == 1
    with database.connect() as conn:
        assert {(r.result_id, r.version) for r in current_results(conn, patient)} == {("R1", 2), ("R2", 3)}


def test_results_are_per_patient_and_newest_first(database) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    with database.begin() as conn:
        ingest(conn, [Delivery(lab_event(patient="c" * 64, result_id=f"R{i}",
                                         reported_at=datetime(2026, 1, i + 1, tzinfo=UTC))) for i in range(3)])
        ingest(conn, [Delivery(lab_event(patient="d" * 64, result_id="X"))])
    with database.connect() as conn:
        shown = current_results(conn, "c" * 64)
    assert [r.result_id for r in shown] == ["R2", "R1", "R0"]
    assert shown[0].reported_at.tzinfo is not None


def test_dead_letters_are_recorded_once_per_origin(database) -> None:  # type: ignore[no-untyped-def]
    with database.begin() as conn:
        assert record_dead_letter(conn, "hr.results.lab.v1", 0, 5, "bad", "{}")
        assert not record_dead_letter(conn, "hr.results.lab.v1", 0, 5, "bad", "{}")
    assert _count(database, DeadLetter) == 1

"""The store's idempotent writes, on SQLite and PostgreSQL."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from exchange.store import Delivery, current_results, ingest, record_dead_letter
from exchange.store.models import Base, DeadLetter, Observation, Result
from tests.fixtures.events import lab_event


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


def test_bulk_append_and_merge_paths_store_the_same_rows(database) -> None:  # type: ignore[no-untyped-def]
    """A batch of new versions is bulk-loaded (COPY on PostgreSQL); one that repeats a stored version falls back
    to the conflict-tolerant path inside the same transaction. Both must write identical rows, and the refused
    bulk load must leave nothing behind."""
    from datetime import UTC, datetime, timedelta, timezone

    import orjson
    from sqlalchemy import text

    patient = "e" * 64
    china = timezone(timedelta(hours=8))
    appended = lab_event(patient=patient, result_id="A", reported_at=datetime(2026, 3, 1, 9, 30, tzinfo=china))
    first = lab_event(patient=patient, result_id="B", reported_at=datetime(2026, 3, 2, tzinfo=UTC))
    merged = lab_event(patient=patient, result_id="C", reported_at=datetime(2026, 3, 1, 9, 30, tzinfo=china))
    with database.begin() as conn:
        bulk = ingest(conn, [Delivery(appended, "t", 0, 1, orjson.dumps(appended)), Delivery(first, "t", 0, 2)])
    with database.begin() as conn:  # B again (a redelivery) makes the bulk load fail: C goes the other way
        mixed = ingest(conn, [Delivery(first, "t", 0, 2), Delivery(merged, "t", 0, 3, orjson.dumps(merged))])
    assert (bulk.stored, bulk.duplicates, mixed.stored, mixed.duplicates) == (2, 0, 1, 1)
    assert _count(database, Result) == 3 and _count(database, Observation) == 3
    columns = "r.kind, r.status, r.patient, r.unified_code, r.local_code, r.mapping_version, r.collected_at, " \
              "r.reported_at, r.event, r.source_topic, h.version, h.patient, h.reported_at"
    with database.connect() as conn:  # raw SQL: the values as stored, not as the ORM types read them back
        rows = {result_id: row for result_id, *row in conn.execute(text(
            f"SELECT r.result_id, {columns} FROM results r JOIN result_heads h ON h.result_pk = r.id"))}
        shown = current_results(conn, patient)
    a, c = rows["A"], rows["C"]
    assert a[:8] == c[:8] and a[10:] == c[10:]  # everything but the event text itself
    assert orjson.loads(a[8]) == appended and orjson.loads(c[8]) == merged
    # Same reported_at: the later-stored C comes first. Times read back as the same UTC instant.
    assert [r.result_id for r in shown] == ["B", "C", "A"]
    assert shown[1].reported_at == shown[2].reported_at == datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
    assert [r.observations[0].value for r in shown] == [e["observations"][0]["value"] for e in (first, merged, appended)]


def test_two_versions_of_one_result_in_a_batch_move_the_head_in_order(database) -> None:  # type: ignore[no-untyped-def]
    patient = "f" * 64
    v1 = lab_event(patient=patient, result_id="R", version=1)
    v3 = lab_event(patient=patient, result_id="R", version=3, status="corrected", value=9.0)
    v2 = lab_event(patient=patient, result_id="R", version=2, status="corrected", value=8.0)
    with database.begin() as conn:
        report = ingest(conn, [Delivery(v1), Delivery(v3), Delivery(v2)])
    assert (report.stored, report.superseded) == (3, 1)
    with database.connect() as conn:
        assert [(r.version, r.observations[0].value) for r in current_results(conn, patient)] == [(3, 9.0)]


def test_times_read_back_in_utc_whatever_the_session_zone(database_url) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL sessions are pinned to UTC by ``connect`` (the store skips per-value conversion on reads), even
    when the URL asks for another zone; SQLite keeps no zone and the column type supplies UTC."""
    from datetime import UTC, datetime, timedelta, timezone

    from exchange.store import connect, migrate

    url = database_url + ("?options=-c%20timezone%3DAsia/Shanghai" if database_url.startswith("postgresql") else "")
    database = connect(url)
    try:
        migrate(database)
        reported = datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=8)))
        with database.begin() as conn:
            ingest(conn, [Delivery(lab_event(patient="9" * 64, reported_at=reported))])
        with database.connect() as conn:
            (shown,) = current_results(conn, "9" * 64)
    finally:
        database.dispose()
    assert shown.reported_at == reported and shown.reported_at.utcoffset() == timedelta(0)
    assert shown.reported_at.isoformat() == "2026-03-01T01:30:00+00:00"
    assert shown.reported_at.tzinfo is UTC or shown.reported_at.tzinfo == UTC


def test_sqlite_time_is_what_the_column_type_writes() -> None:
    """Rows given straight to the SQLite driver must hold the same text as SQLAlchemy writes for the column."""
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy.dialects import sqlite

    from exchange.store.write import sqlite_time

    dialect = sqlite.dialect()
    column_type = Result.__table__.c.reported_at.type
    bind = column_type.dialect_impl(dialect).bind_processor(dialect)
    for moment in (datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=8))),
                   datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
                   datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))):
        assert sqlite_time(moment) == bind(moment)
    assert sqlite_time(None) is None



def test_a_patients_read_gives_exact_values_and_types(database) -> None:  # type: ignore[no-untyped-def]
    """On PostgreSQL the patient read bypasses SQLAlchemy's row processing (psycopg, binary): it must give
    exactly what SQLAlchemy's own read of the same statement gives, value for value and type for type."""
    from datetime import UTC, datetime, timedelta

    from exchange.store import StoredObservation
    from exchange.store.results import _CURRENT_RESULTS, _patient_rows

    patient = "e" * 64
    reported = datetime(2026, 11, 1, 8, 0, 0, 123456, tzinfo=UTC)
    observations = [
        {"seq": 0, "item": {"unified_code": "L0001", "local_code": "GLU"}, "value_type": "quantity", "value": 4.25,
         "unit": "mmol/L", "reference_range": {"low": 3.9, "high": 6.1, "text": None}, "interpretation": "N"},
        {"seq": 1, "item": {"unified_code": None, "local_code": "NOTE"}, "value_type": "text",
         "value_text": "溶血 (hemolysed)", "reference_range": {"text": "阴性"}}]
    with database.begin() as conn:
        ingest(conn, [Delivery(lab_event(patient=patient, reported_at=reported, observations=observations))])
    with database.connect() as conn:
        fast = [tuple(row) for row in _patient_rows(conn, patient)]
        generic = [tuple(row) for row in conn.execute(_CURRENT_RESULTS, {"patient": patient}).all()]
        (shown,) = current_results(conn, patient)
    assert fast == generic and len(fast) == 2
    assert [[type(v) for v in row] for row in fast] == [[type(v) for v in row] for row in generic]
    assert (shown.reported_at, shown.collected_at) == (reported, reported - timedelta(hours=2))
    assert shown.reported_at.utcoffset() == timedelta(0)
    assert shown.event_json is None  # a lab result's event is not read for a listing
    assert shown.observations == (
        StoredObservation(0, "L0001", "GLU", None, 4.25, None, "mmol/L", 3.9, 6.1, None, "N"),
        StoredObservation(1, None, "NOTE", None, None, "溶血 (hemolysed)", None, None, None, "阴性", None))

"""The store's write path: columns from the models, values as SQLAlchemy would write them, errors as SQLAlchemy's."""
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, Table, Text, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from exchange.store import Delivery, write
from exchange.store.models import (AuditRecord, Base, DeadLetter, Decision, Observation, Presentation, Result,
                                   ResultHead)
from exchange.store.results import _Batch, IngestReport, observation_rows
from tests.fixtures.events import lab_event
from tests.fixtures.stores import drop_audit_guards

CHINA = timezone(timedelta(hours=8))
PARENT = 10**6  # the id of the result that observation and head rows point at (above any the sequence gives)
#: Every model the store writes, with one row of it (every column but the generated id).
ROWS: dict[type[Base], dict[str, Any]] = {
    Result: {"issuer": "bj-a", "result_id": "R1", "version": 2, "kind": "lab", "status": "corrected",
             "patient": "a" * 64, "unified_code": "L0001", "local_code": "GLU", "mapping_version": None,
             "collected_at": None, "reported_at": datetime(2026, 3, 1, 9, 30, 0, 120000, tzinfo=CHINA),
             "stored_at": datetime(2026, 3, 1, 2, 0, tzinfo=UTC), "event": '{"x": "溶血"}', "source_topic": "t",
             "source_partition": 3, "source_offset": 2**40},
    Observation: {"result_pk": PARENT, "seq": 0, "unified_code": None, "local_code": "GLU", "local_system": None,
                  "value": 5, "value_text": None, "unit": "mmol/L", "ref_low": 3.9, "ref_high": 6.1,
                  "ref_text": "阴性", "interpretation": "N"},
    ResultHead: {"issuer": "bj-a", "result_id": "R1", "version": 2, "result_pk": PARENT, "patient": "a" * 64,
                 "reported_at": datetime(2026, 3, 1, 9, 30, tzinfo=CHINA)},
    DeadLetter: {"topic": "t", "partition": 0, "offset": 7, "error": "bad", "payload": None,
                 "failed_at": datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)},
    AuditRecord: {"at": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))), "actor": "u",
                  "institution": None, "purpose": "treatment", "patient": "a" * 64, "action": "read",
                  "detail": "{}", "role": None, "department": "检验科", "on_behalf_of": None, "break_glass": True,
                  "seq": 1, "content_digest": "c" * 64, "chain_digest": "d" * 64},
    Presentation: {"check_id": "c", "requesting_institution": "bj-b", "encounter_key": "E", "patient": "a" * 64,
                   "result_issuer": "bj-a", "result_id": "R1", "result_version": 2, "item_code": "L0001",
                   "tier": "city", "trigger": "encounter", "presented_at": datetime(2026, 3, 2, tzinfo=UTC)},
    Decision: {"decision_id": "d", "result_issuer": "bj-a", "result_id": "R1", "result_version": 2,
               "item_code": None, "patient": "a" * 64, "requesting_institution": "bj-b", "clinician_id": "c",
               "encounter_id": "E", "order_id": None, "trigger": "order", "decision": "accept", "reason_code": None,
               "note": None, "revokes": None, "decided_at": datetime(2026, 3, 2, tzinfo=UTC), "published_at": None},
}


def _parent(database) -> None:  # type: ignore[no-untyped-def]
    with database.begin() as conn:
        conn.execute(insert(Result.__table__), [dict(ROWS[Result], id=PARENT, result_id="parent")])


def _stored(conn, table: Table, names: tuple[str, ...]) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    """The rows as the database holds them (raw SQL: not as the column types read them back)."""
    quoted = ", ".join(f'"{name}"' for name in names)  # "offset" is a reserved word
    return [tuple(row) for row in conn.execute(text(f"SELECT {quoted} FROM {table.name} ORDER BY {quoted}"))]


def test_the_written_columns_are_the_models() -> None:
    for model, row in ROWS.items():
        table = model.__table__
        assert write.columns(table) == tuple(row), model
        assert write.columns(table, with_id=True) == tuple(c.name for c in table.columns)


def test_a_column_added_to_a_model_is_written_and_required(database) -> None:  # type: ignore[no-untyped-def]
    """The write path takes its columns from the model: a new column is written without touching it, and a row
    without a value for it is refused."""
    _parent(database)
    for model, row in ROWS.items():
        grown = model.__table__.to_metadata(MetaData())
        grown.append_column(Column("added_later", Text))
        with database.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {grown.name} ADD COLUMN added_later TEXT")
            write.insert(conn, grown, [dict(row, added_later="written")])
            assert conn.execute(select(grown.c.added_later).where(grown.c.added_later.is_not(None))).scalar_one() \
                == "written"
            with pytest.raises(KeyError, match="added_later"):
                write.insert(conn, grown, [row])


def test_rows_are_stored_as_sqlalchemy_stores_them(database) -> None:  # type: ignore[no-untyped-def]
    """Times (any zone in, UTC stored), numbers, text and NULLs: the driver-level write and SQLAlchemy's own
    insert of the same row leave the same values in the database."""
    _parent(database)
    with database.begin() as conn:
        drop_audit_guards(conn)  # rows are removed between the two writes
    for model, row in ROWS.items():
        table = model.__table__
        names = write.columns(table)
        written = table.c.result_id != "parent" if model is Result else True
        with database.begin() as conn:
            conn.execute(insert(table), [row])
            theirs = _stored(conn, table, names)
            conn.execute(table.delete().where(written))
            if model is Result or model is Observation:
                write.load(conn, table, [row])
            else:
                write.insert(conn, table, [row])
            assert _stored(conn, table, names) == theirs, model
            conn.execute(table.delete().where(written))


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        write.sqlite_time(datetime(2026, 1, 1))


def test_duplicates_skipped_returned_and_refused(database) -> None:  # type: ignore[no-untyped-def]
    table = DeadLetter.__table__
    row = ROWS[DeadLetter]
    with database.begin() as conn:
        (first,) = write.insert_returning(conn, table, [row], ("id", "offset"), on_conflict=write.DO_NOTHING)
        assert first[1] == 7 and isinstance(first[0], int)
        again = write.insert_returning(conn, table, [row, dict(row, offset=8)], ("offset",),
                                       on_conflict=write.DO_NOTHING)
        assert again == [(8,)]
        assert write.insert(conn, table, [row], on_conflict=write.DO_NOTHING) == 0
    with database.begin() as conn, pytest.raises(IntegrityError):  # the driver's error, as SQLAlchemy's
        write.insert(conn, table, [row])


def test_updates_and_deletes_by_key(database) -> None:  # type: ignore[no-untyped-def]
    table = Observation.__table__
    rows = [dict(ROWS[Observation], seq=seq) for seq in range(3)]
    _parent(database)
    with database.begin() as conn:
        write.insert(conn, table, rows)
        changed = write.update(conn, table, [{"result_pk": PARENT, "seq": 1, "unified_code": "L0002", "value": 6.5}],
                               key=("result_pk", "seq"))
        deleted = write.delete(conn, table, [{"result_pk": PARENT, "seq": 2}])
        assert (changed, deleted) == (1, 1)
        assert _stored(conn, table, ("seq", "unified_code", "value")) == [(0, None, 5.0), (1, "L0002", 6.5)]
        with pytest.raises(KeyError):
            write.update(conn, table, [{"result_pk": PARENT, "no_such_column": 1}], key=("result_pk",))


def test_pipelined_writes_report_their_errors_before_the_commit(database) -> None:  # type: ignore[no-untyped-def]
    missing = Table("no_such_table", MetaData(), Column("x", Text))
    with pytest.raises(DBAPIError), database.begin() as conn:
        with write.pipelined(conn):
            write.insert(conn, AuditRecord.__table__, [ROWS[AuditRecord]])
            write.insert(conn, missing, [{"x": "y"}])
    with database.connect() as conn:
        assert _stored(conn, AuditRecord.__table__, ("actor",)) == []


def test_the_engine_fills_every_column_of_results_and_observations() -> None:
    """What ingest writes is built by name; a model column it does not fill would be refused at the write."""
    event = lab_event()
    (row,) = _Batch.of([Delivery(event, "t", 0, 1)], IngestReport()).rows
    assert set(row) == set(write.columns(Result.__table__, with_id=True))
    assert {name for obs in observation_rows(1, event) for name in obs} == set(write.columns(Observation.__table__))

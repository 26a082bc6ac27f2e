"""The audit trail's hash chain, append-only rule and ``hrx audit verify`` (exchange/audit_chain.py), both stores."""
from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from click.testing import CliRunner
from sqlalchemy import Engine, Row, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from exchange import audit
from exchange.audit_chain import GENESIS, Verification, chain_digest, content_digest, verify
from exchange.store import connect, migrate, pipelined
from exchange.store.db import MIGRATIONS
from exchange.store.models import AuditRecord
from tests.fixtures.stores import PG_ADMIN_URL, drop_audit_guards

READER = audit.Actor("dr-wang", "bj-chaoyang-001", "treatment")
HIS = audit.Actor("his-chaoyang", "bj-chaoyang-001", "order_check", role="his_client", department="检验科",
                  on_behalf_of="dr-li", break_glass=True)
PATIENT = "a" * 64


def _record(database: Engine, n: int, actor: audit.Actor = READER) -> None:
    for i in range(n):
        with database.begin() as conn:
            audit.record(conn, actor, "patient.results", PATIENT, {"n": i, "note": "溶血"})


def _verified(database: Engine) -> Verification:
    with database.begin() as conn:
        return verify(conn)


def _rows(database: Engine) -> list[Row[Any]]:
    with database.connect() as conn:
        return list(conn.execute(select(AuditRecord.__table__).order_by(AuditRecord.seq)))


def _tamper(database: Engine, statement: str) -> None:
    """What someone with the database owner's rights can do: drop the guards, then change the table."""
    with database.begin() as conn:
        drop_audit_guards(conn)
        conn.execute(text(statement))


def test_records_are_chained_in_order_and_verify(database) -> None:  # type: ignore[no-untyped-def]
    _record(database, 3)
    with database.begin() as conn:  # two records in one transaction
        audit.record(conn, HIS, "recognition.check", PATIENT, {})
        audit.record(conn, READER, "audit.read", None, {"records": 4})
    rows = _rows(database)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    head = GENESIS
    for r in rows:
        assert r.content_digest == content_digest(r._mapping)
        head = chain_digest(head, r.content_digest)
        assert r.chain_digest == head
    assert _verified(database) == Verification(5, rows[-1].chain_digest)
    assert (rows[3].role, rows[3].department, rows[3].on_behalf_of, rows[3].break_glass) == \
        ("his_client", "检验科", "dr-li", True)
    assert rows[0].break_glass is False and rows[0].role is None


def test_the_trail_shows_role_department_and_for_whom(database) -> None:  # type: ignore[no-untyped-def]
    _record(database, 1, HIS)
    with database.connect() as conn:
        (shown,) = audit.trail(conn, PATIENT)
    assert {k: shown[k] for k in ("actor", "role", "department", "on_behalf_of", "break_glass")} == {
        "actor": "his-chaoyang", "role": "his_client", "department": "检验科", "on_behalf_of": "dr-li",
        "break_glass": True}


def test_an_empty_chain_verifies_at_genesis(database) -> None:  # type: ignore[no-untyped-def]
    assert _verified(database) == Verification(0, GENESIS)


def test_a_record_rolled_back_leaves_no_gap(database) -> None:  # type: ignore[no-untyped-def]
    _record(database, 1)
    with pytest.raises(RuntimeError), database.begin() as conn:
        audit.record(conn, READER, "patient.results", PATIENT, {})
        raise RuntimeError("the read failed")
    _record(database, 1)
    assert [r.seq for r in _rows(database)] == [1, 2] and _verified(database).ok


def test_a_changed_field_is_found_at_its_seq(database) -> None:  # type: ignore[no-untyped-def]
    _record(database, 4)
    intact = _rows(database)
    _tamper(database, "UPDATE audit SET purpose = 'quality' WHERE seq = 3")
    found = _verified(database)
    assert found.records == 2 and found.head == intact[1].chain_digest
    assert found.broken is not None
    assert (found.broken.seq, found.broken.id, found.broken.digest) == (3, intact[2].id, "content_digest")
    assert found.broken.found == intact[2].content_digest != found.broken.expected


def test_a_changed_field_with_its_content_digest_breaks_the_link(database) -> None:  # type: ignore[no-untyped-def]
    _record(database, 3)
    changed = dict(_rows(database)[1]._mapping, actor="someone-else")
    _tamper(database, f"UPDATE audit SET actor = 'someone-else', content_digest = '{content_digest(changed)}' "
                      "WHERE seq = 2")
    broken = _verified(database).broken
    assert broken is not None and (broken.seq, broken.digest) == (2, "chain_digest")


def test_a_removed_record_is_a_gap(database) -> None:  # type: ignore[no-untyped-def]
    _record(database, 4)
    third = _rows(database)[2]
    _tamper(database, "DELETE FROM audit WHERE seq = 2")
    found = _verified(database)
    assert found.records == 1 and found.broken is not None
    assert (found.broken.seq, found.broken.id, found.broken.digest, found.broken.expected, found.broken.found) == \
        (2, third.id, "seq", "2", "3")


def test_records_swapped_break_the_chain(database) -> None:  # type: ignore[no-untyped-def]
    _record(database, 4)
    _tamper(database, "UPDATE audit SET seq = -2 WHERE seq = 2")
    _tamper(database, "UPDATE audit SET seq = 2 WHERE seq = 3")
    _tamper(database, "UPDATE audit SET seq = 3 WHERE seq = -2")
    broken = _verified(database).broken
    assert broken is not None and (broken.seq, broken.digest) == (2, "chain_digest")


@pytest.mark.parametrize("statement", ["UPDATE audit SET purpose = 'quality'", "DELETE FROM audit"])
def test_records_cannot_be_changed_or_removed(database, statement: str) -> None:  # type: ignore[no-untyped-def]
    _record(database, 2)
    with pytest.raises(DBAPIError, match="append-only"), database.begin() as conn:
        conn.execute(text(statement))
    assert _verified(database).records == 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_audit_table_cannot_be_truncated(database) -> None:  # type: ignore[no-untyped-def]
    _record(database, 1)
    with pytest.raises(DBAPIError, match="append-only"), database.begin() as conn:
        conn.execute(text("TRUNCATE audit"))


def test_postgresql_links_whatever_the_row_claims(database) -> None:  # type: ignore[no-untyped-def]
    """The database, not the writer, decides seq and chain digest on PostgreSQL; on SQLite a forged seq that is
    already taken is refused."""
    _record(database, 1)
    forged = dict(_rows(database)[0]._mapping)
    del forged["id"]
    with database.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(AuditRecord.__table__.insert(), [dict(forged, chain_digest="f" * 64)])
        else:
            with pytest.raises(IntegrityError):
                conn.execute(AuditRecord.__table__.insert(), [forged])
    assert _verified(database).ok


def test_concurrent_appenders_leave_one_unbroken_chain(database) -> None:  # type: ignore[no-untyped-def]
    """Four writers, fifty transactions each, as the API writes (pipelined on PostgreSQL)."""
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def append(worker: int) -> None:
        try:
            start.wait()
            for i in range(50):
                with database.begin() as conn, pipelined(conn):
                    audit.record(conn, READER, "recognition.check", PATIENT, {"worker": worker, "i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _verified(database).records == 200
    assert [r.seq for r in _rows(database)] == list(range(1, 201))


def test_the_migration_chains_earlier_records_in_id_order(database_url: str) -> None:
    engine = connect(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        for actor in ("first", "second", "third"):
            conn.execute(text("INSERT INTO audit (at, actor, institution, purpose, patient, action, detail) VALUES "
                              "('2026-01-01 08:00:00.000001', :actor, NULL, 'treatment', NULL, 'x', '{}')"),
                         {"actor": actor})
    migrate(engine)
    try:
        rows = _rows(engine)
        assert [(r.seq, r.actor, r.break_glass) for r in rows] == \
            [(1, "first", False), (2, "second", False), (3, "third", False)]
        assert _verified(engine) == Verification(3, rows[-1].chain_digest)
        _record(engine, 1)
        assert _verified(engine).records == 4
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_api_role_may_only_read_and_append(database_url: str, postgres_admin: Engine,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    role = f"hrx_api_{uuid.uuid4().hex[:8]}"
    with postgres_admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} NOLOGIN"))
    monkeypatch.setenv("HRX_API_DB_ROLE", role)
    engine = connect(database_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL ROLE {role}"))
            audit.record(conn, READER, "patient.results", PATIENT, {})  # the trigger reads the head as this role
            assert len(audit.trail(conn, PATIENT)) == 1
        for statement in ("UPDATE audit SET purpose = 'quality'", "DELETE FROM audit", "TRUNCATE audit"):
            with pytest.raises(DBAPIError, match="permission denied"), engine.begin() as conn:
                conn.execute(text(f"SET LOCAL ROLE {role}"))
                conn.execute(text(statement))
        with engine.connect() as conn:
            granted = {p for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
                       if conn.execute(text("SELECT has_table_privilege(:role, 'audit', :p)"),
                                       {"role": role, "p": p}).scalar_one()}
            public_may_change = conn.execute(text(
                "SELECT has_table_privilege('public', 'audit', 'UPDATE')")).scalar_one()
        assert granted == {"SELECT", "INSERT"} and public_may_change is False
        assert _verified(engine).records == 1
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))  # its grants, so that the role can go
        engine.dispose()
        with postgres_admin.connect() as conn:
            conn.execute(text(f"DROP ROLE {role}"))


def _hrx(args: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    from exchange.cli import main

    clean = {name: None for name in os.environ if name.startswith("HRX_")}  # only what the test sets
    return CliRunner().invoke(main, args, env={**clean, **(env or {})})


def test_hrx_audit_verify_prints_the_head_or_the_first_break(database, database_url: str,
                                                             tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _record(database, 3)
    head = _rows(database)[-1].chain_digest
    intact = _hrx(["audit", "verify", "--database", database_url])
    assert intact.exit_code == 0, intact.output
    assert intact.stdout.strip() == f"OK: 3 records, head {head}"
    by_settings = _hrx(["audit", "verify"], {"HRX_DATABASE_URL": database_url, "HRX_VAR_DIR": str(tmp_path)})
    assert by_settings.exit_code == 0 and by_settings.stdout == intact.stdout
    _tamper(database, "UPDATE audit SET detail = '{}' WHERE seq = 2")
    broken = _hrx(["audit", "verify", "--database", database_url])
    assert broken.exit_code == 1
    assert "seq 2 " in broken.stdout and "content_digest" in broken.stdout and "1 records intact" in broken.stdout


def test_hrx_audit_verify_on_an_unreadable_store_exits_2(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"  # no migration ran: no audit table
    found = _hrx(["audit", "verify", "--database", empty])
    assert found.exit_code == 2 and "cannot read the audit chain" in found.stderr


def test_on_postgresql_a_record_costs_no_round_trip_before_its_insert(database) -> None:  # type: ignore[no-untyped-def]
    """Inside pipelined() the API's audit row must travel without a reply awaited: on PostgreSQL nothing but the
    write path's INSERT (which bypasses SQLAlchemy's execution) is sent; SQLite reads the head under its lock."""
    from sqlalchemy import event

    sent: list[str] = []
    with database.begin() as conn:
        event.listen(conn, "before_cursor_execute", lambda *args: sent.append(args[2]))
        with pipelined(conn):
            audit.record(conn, READER, "recognition.check", PATIENT, {})
    if database.dialect.name == "postgresql":
        assert sent == []
    else:
        assert sent[0] == "BEGIN IMMEDIATE" and len(sent) == 2
    assert _verified(database).records == 1

"""``hrx migrate`` (exchange/cli/migrate.py) as its own deployment step, and the API and the engine refusing to
start on a store at another schema revision (exchange/store/db.py, exchange/runtime.py), on both stores."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

from exchange.store import connect, migrate
from exchange.store.db import expected_revision
from tests.fixtures.pseudonyms import TEST_KEY

# The commands run in-process (CliRunner), but against both real stores.
pytestmark = pytest.mark.integration

#: An address where no broker listens: each refusal must come before the broker is needed.
NO_BROKER = "127.0.0.1:9"


def _hrx(args: list[str], database_url: str, tmp_path):  # type: ignore[no-untyped-def]
    from exchange.cli import main

    clean = {name: None for name in os.environ if name.startswith("HRX_")}  # only what the test sets
    return CliRunner().invoke(main, args, env={**clean, "HRX_DATABASE_URL": database_url,
                                               "HRX_VAR_DIR": str(tmp_path / "var"),
                                               "HRX_PSEUDONYM_KEY": TEST_KEY.decode(),
                                               "HRX_KAFKA_BOOTSTRAP": NO_BROKER})


def _schema(database_url: str) -> tuple[str | None, list[str]]:
    engine = connect(database_url)
    try:
        with engine.connect() as conn:
            tables = sorted(inspect(conn).get_table_names())
            version = (conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
                       if "alembic_version" in tables else None)
        return version, tables
    finally:
        engine.dispose()


def _refused(database_url: str, tmp_path, *expected: str) -> None:  # type: ignore[no-untyped-def]
    for command in (["serve"], ["engine"], ["migrate", "--check"]):
        run = _hrx(command, database_url, tmp_path)
        assert run.exit_code == 1, (command, run.output)
        for words in expected:
            assert words in run.output, (command, run.output)


def test_serve_and_engine_refuse_an_unmigrated_store_and_migrate_is_idempotent(database_url: str,
                                                                              tmp_path) -> None:  # type: ignore[no-untyped-def]
    head = expected_revision()
    _refused(database_url, tmp_path, "has no schema yet (never migrated)", f"expects revision {head}",
             "run `hrx migrate`")
    assert _schema(database_url) == (None, [])  # refusing changed nothing: no version table, no tables

    first = _hrx(["migrate"], database_url, tmp_path)
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == f"store at schema revision {head}"
    migrated = _schema(database_url)
    assert migrated[0] == head and "results" in migrated[1]
    again = _hrx(["migrate"], database_url, tmp_path)
    assert again.exit_code == 0 and again.stdout == first.stdout
    assert _schema(database_url) == migrated
    checked = _hrx(["migrate", "--check"], database_url, tmp_path)
    assert checked.exit_code == 0 and checked.stdout.strip() == f"store at schema revision {head}, as this " \
                                                                 "version expects"


def test_serve_and_engine_refuse_an_older_or_a_newer_revision(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = connect(database_url)
    try:
        migrate(engine, to="0004")  # the store as the release before access control left it
        _refused(database_url, tmp_path, "is at schema revision 0004", f"expects revision {expected_revision()}",
                 "run `hrx migrate`")
        assert "accounts" not in _schema(database_url)[1]
        upgraded = _hrx(["migrate"], database_url, tmp_path)
        assert upgraded.exit_code == 0, upgraded.output
        assert _schema(database_url)[0] == expected_revision()

        with engine.begin() as conn:  # as a newer hrx's migration would have left it
            conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        _refused(database_url, tmp_path, "is at schema revision 0099, which this version of hrx does not know",
                 "migrated by a newer hrx")
        refused = _hrx(["migrate"], database_url, tmp_path)  # an older hrx never "migrates" a newer store
        assert refused.exit_code == 1 and "migrated by a newer hrx" in refused.output
        assert _schema(database_url)[0] == "0099"
    finally:
        engine.dispose()


def test_stores_migrated_from_threads_at_once_each_reach_the_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Alembic's ``op`` and ``context`` are process-wide: upgrades started together in threads (the fault suite
    migrates its SQLite and PostgreSQL stores so) must not run each other's steps on the wrong connection."""
    from concurrent.futures import ThreadPoolExecutor

    engines = [connect(f"sqlite:///{tmp_path / f'store-{k}.db'}") for k in range(4)]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            list(pool.map(migrate, engines))
        for engine in engines:
            tables = set(inspect(engine).get_table_names())
            assert {"results", "accounts", "audit"} <= tables
            assert "totp_step" in {c["name"] for c in inspect(engine).get_columns("accounts")}
            with engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == expected_revision()
    finally:
        for engine in engines:
            engine.dispose()

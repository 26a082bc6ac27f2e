"""The store a scenario writes to (a fresh SQLite file or PostgreSQL database) and what the oracle reads back.

PostgreSQL is the machine's server at 127.0.0.1:5432 (``HRX_CHAOS_PG_URL`` overrides the admin URL); each run
gets its own database, dropped afterwards.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from exchange.store import connect, migrate
from exchange.store.models import Observation, Result

PG_ADMIN_URL = os.environ.get("HRX_CHAOS_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")

#: (issuer, result_id): one report as its source sent it (every scenario sends each report in one version).
Key = tuple[str, str]


def pg_admin(sql: str) -> None:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def pg_up() -> bool:
    try:
        pg_admin("SELECT 1")
        return True
    except SQLAlchemyError:
        return False


def pg_clusters() -> list[str]:
    """The versions of the machine's PostgreSQL clusters (``/etc/postgresql/<version>/main``)."""
    return sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []


def ensure_pg(timeout: float = 30.0) -> None:
    """Start the machine's cluster when it is down (as the test fixtures do); raise when it stays down."""
    if pg_up():
        return
    for version in pg_clusters():
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False,
                       capture_output=True)
    deadline = time.monotonic() + timeout
    while not pg_up():
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
        time.sleep(0.5)


@contextmanager
def fresh_store(backend: str, directory: Path, label: str) -> Iterator[str]:
    """A new, migrated store on ``backend``; yields its URL (the PostgreSQL database is dropped afterwards)."""
    if backend == "sqlite":
        url = f"sqlite:///{directory / f'{label}.db'}"
        _migrate(url)
        yield url
        return
    ensure_pg()
    name = f"hrx_chaos_{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        _migrate(url)
        yield url
    finally:
        ensure_pg(60)
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(url: str) -> None:
    engine = connect(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


class StoredResults:
    """Reads what the store holds, for the oracle; a read that fails (PostgreSQL restarting) is retried."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = connect(url)

    def _read(self, statement, retry_for: float = 60.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + retry_for
        while True:
            try:
                with self.engine.connect() as conn:
                    return conn.execute(statement).all()
            except SQLAlchemyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def count(self) -> int:
        return int(self._read(select(func.count()).select_from(Result))[0][0])

    def rows_per_key(self) -> Counter[Key]:
        """How many stored rows (versions) each (issuer, result_id) has."""
        rows = self._read(select(Result.issuer, Result.result_id, func.count()).group_by(Result.issuer,
                                                                                       Result.result_id))
        return Counter({(issuer, result_id): n for issuer, result_id, n in rows})

    def observations_per_key(self) -> Counter[Key]:
        rows = self._read(select(Result.issuer, Result.result_id, func.count())
                          .join(Observation, Observation.result_pk == Result.id)
                          .group_by(Result.issuer, Result.result_id))
        return Counter({(issuer, result_id): n for issuer, result_id, n in rows})

    def close(self) -> None:
        self.engine.dispose()


def duplicates(rows: Counter[Key]) -> int:
    """Rows beyond the first for any report: each scenario sends every report in one version only."""
    return sum(n - 1 for n in rows.values() if n > 1)

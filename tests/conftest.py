"""Shared fixtures: a real Kafka-protocol broker (tansu) and both real stores (SQLite and PostgreSQL).

Every storage test runs on both databases through the parametrized ``database_url`` fixture. PostgreSQL is
the machine's server at 127.0.0.1:5432 (started here if it is down); each test gets a fresh database.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from exchange.broker import EmbeddedBroker, ensure_topics
from schemas.topics import DEFAULT_PARTITIONS
from adapters.pseudonymize import Pseudonymizer

PG_ADMIN_URL = os.environ.get("HRX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_KEY = b"hrx-test-pseudonym-key-0123456789abcdef"


def _pg_up() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """The PostgreSQL server; started with pg_ctlcluster when it is down. Absent PostgreSQL is a failure."""
    if not _pg_up():
        clusters = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
        for version in clusters:
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False)
        deadline = time.monotonic() + 30
        while not _pg_up() and time.monotonic() < deadline:
            time.sleep(0.5)
    if not _pg_up():
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; every storage test needs it")
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hrx.db'}"
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    name = f"hrx_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database(database_url: str) -> Iterator[Engine]:
    """A migrated store on each backend."""
    from exchange.store import connect, migrate

    engine = connect(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A fresh tansu broker (memory-only) on a free loopback port, with the exchange's topics."""
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as b:
        ensure_topics(b.bootstrap, DEFAULT_PARTITIONS)
        yield b


@pytest.fixture(scope="session")
def book():  # type: ignore[no-untyped-def]
    from codes import load_codebook

    return load_codebook()


@pytest.fixture
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(TEST_KEY)


@pytest.fixture
def engine_thread(broker: EmbeddedBroker, database: Engine) -> Iterator[object]:
    """A ResultEngine consuming in a background thread for the duration of a test."""
    from exchange.engine import ResultEngine
    from adapters.publish import Publisher

    publisher = Publisher(broker.bootstrap)
    # 6 s is Apache Kafka's minimum session timeout; on tansu a shorter one also makes joining faster.
    worker = ResultEngine(broker.bootstrap, database, f"test-{uuid.uuid4().hex[:8]}", publisher,
                          session_timeout_ms=6000)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    # Tests start once the group has its partitions: joining takes seconds on tansu, and stopping a
    # consumer in the middle of its join costs more seconds at teardown.
    if not worker.ready.wait(60):
        pytest.fail(f"engine did not join its consumer group: {worker.stats.last_error}")
    yield worker
    stop.set()
    thread.join(15)
    publisher.close()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail the test with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout:.0f}s: {getattr(predicate, '__name__', predicate)}")

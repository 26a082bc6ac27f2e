"""Backup and restore as docs/operations.md describes it, done once: ``pg_dump`` of a PostgreSQL store, ``pg_restore``
into a new database, and the exchange on the restored store answers a check as before, with the same accounts
and tokens, the audit chain intact and continuing, and the pseudonym key kept apart (it is in no dump: the
restored store is useless without the key, and the key file is backed up on its own)."""
from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from adapters.pipeline import ResultPipeline
from exchange.api import Context, create_app
from exchange.audit_chain import verify
from exchange.store import Delivery, connect, ingest, migrate
from tests.exchange.api.test_decisions import RESIDENT_ID, _report
from tests.fakes import FakePublisher
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.principals import Principals
from tests.fixtures.stores import PG_ADMIN_URL

pytestmark = pytest.mark.skipif(
    shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
    reason="pg_dump/pg_restore not installed (PostgreSQL client tools: apt-get install postgresql-client)")

REQUESTER = "bj-chaoyang-001"


def _libpq(url: str) -> list[str]:
    """pg_dump/pg_restore connection options of a SQLAlchemy URL."""
    parsed = make_url(url)
    return ["-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432), "-U", parsed.username or "postgres"]


@pytest.fixture
def pg_pair(postgres_admin: Engine) -> Iterator[tuple[str, str]]:
    """Two new PostgreSQL databases: the store, and the one it is restored into."""
    names = [f"hrx_t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with postgres_admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    with postgres_admin.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _check(database: Engine, book: Any, pseudonymizer: Any, his: dict[str, str]) -> dict[str, Any]:
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),  # type: ignore[arg-type]
                      bootstrap="127.0.0.1:9", engine_group="g")
    with TestClient(create_app(context)) as client:
        answer = client.post("/api/v1/recognition/check", headers=his, json={
            "patient": {"resident_id": RESIDENT_ID}, "requesting_institution": REQUESTER})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    body.pop("check_id"), body.pop("at")  # this check's own id and moment
    return body


def test_pg_dump_and_restore_answer_the_check_as_before(pg_pair: tuple[str, str], book, pseudonymizer,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    source_url, restored_url = pg_pair
    source = connect(source_url)
    migrate(source)
    events = [ResultPipeline(book, pseudonymizer).lab_event(r, "fhir") for r in (
        _report("R1", [("BJXCGLU", 99.0, "mg/dL")]), _report("R2", [("BJXCALT", 30.0, "U/L")], hours_ago=24 * 40))]
    with source.begin() as conn:
        ingest(conn, [Delivery(e) for e in events])
    who = Principals(source)
    who.encounter(events[0]["patient"]["pseudonym"], REQUESTER)
    his = who.his(REQUESTER)
    before = _check(source, book, pseudonymizer, his)
    assert {e["result"]["result_id"] for e in before["results"]} == {"R1", "R2"}

    dump = tmp_path / "hrx.dump"
    subprocess.run(["pg_dump", *_libpq(source_url), "--format=custom", "--file", str(dump),
                    make_url(source_url).database or ""], check=True, capture_output=True, timeout=120)
    source.dispose()
    subprocess.run(["pg_restore", *_libpq(restored_url), "--exit-on-error", "--dbname",
                    make_url(restored_url).database or "", str(dump)], check=True, capture_output=True, timeout=120)
    assert TEST_KEY not in dump.read_bytes()  # the key is never in the store, so never in its dump

    restored = connect(restored_url)
    try:
        migrate(restored)  # at head already: nothing to do
        after = _check(restored, book, pseudonymizer, his)  # the same token: accounts and tokens were restored
        assert after == before
        with restored.connect() as conn:
            chain = verify(conn)
        assert chain.ok and chain.records == 2  # both checks' audit records, the restored one continuing the chain
    finally:
        restored.dispose()

"""The journal: ACKs without an fsync before the ACK, yet replayed after a restart; group commit keeps the
newest ACK; report digests committed before ``record_reports`` returns, surviving a killed process."""
from __future__ import annotations

import pytest

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from adapters.hl7 import AckJournal, Hl7Receiver, StoredReport
from tests.adapters.hl7.hl7data import CHAOYANG


def test_ack_journal_skips_the_fsync_but_survives_a_restart(receiver) -> None:  # type: ignore[no-untyped-def]
    """WAL + synchronous=NORMAL, written by a group-committing thread: no fsync and no SQLite write of the ACK
    before it is sent (the results are durable in Kafka, not here). A queued ACK is replayed at once, and a
    committed one by a new process (close() commits the queue); every replay follows a republish."""
    journal = receiver.journal
    with journal._reader() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL (FULL is 2)
    first = receiver.handle(CHAOYANG)
    assert receiver.handle(CHAOYANG).ack == first.ack  # whether or not the writer has committed it yet
    assert len(receiver.publisher.records) == 2  # the resend was published again
    journal.close()
    reopened = AckJournal(journal.path)
    try:
        assert reopened.count() == 1
        again = Hl7Receiver("bj-chaoyang-001", receiver.book, receiver.pseudonymizer, receiver.publisher,
                            reopened).handle(CHAOYANG)
        assert again.duplicate and again.ack == first.ack and len(receiver.publisher.records) == 3
    finally:
        reopened.close()


def test_ack_journal_group_commit_keeps_the_latest_ack_per_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    journal = AckJournal(tmp_path / "acks.db")
    rows = [(("LIS", "F", f"C{i % 50}"), f"d{i}") for i in range(2000)]

    def put(share: list[tuple[tuple[str, str, str], str]]) -> None:
        for key, digest in share:
            journal.put(key, digest, "AA", b"ack")

    workers = [threading.Thread(target=put, args=(rows[n::8],)) for n in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    journal.put(("LIS", "F", "C0"), "last", "CA", b"last ack")  # a reused control ID: the newest ACK wins
    assert journal.get(("LIS", "F", "C0")).digest == "last"
    assert journal.count() == 50 and journal._pending == {}  # count() waits for the writer
    journal.close()
    reopened = AckJournal(tmp_path / "acks.db")
    try:
        stored = reopened.get(("LIS", "F", "C0"))
        assert (stored.digest, stored.code, stored.ack) == ("last", "CA", b"last ack")
    finally:
        reopened.close()


_KILLED_WRITER = """
import os, sys
from pathlib import Path
from adapters.hl7 import AckJournal, StoredReport
journal = AckJournal(Path(sys.argv[1]))
journal.put(("LIS", "F", "C1"), "d", "AA", b"ack")
journal.record_reports({("bj-chaoyang-001", "R1", 2): StoredReport("a" * 64, "k1")})
os._exit(0)  # killed: no close(), nothing flushed after record_reports returned
"""


@pytest.mark.integration  # a second process reads the journal
def test_report_digests_are_committed_before_record_reports_returns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "acks.db"
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], check=True, cwd=Path(__file__).parents[3])
    journal = AckJournal(path)
    try:
        assert journal.reports([("bj-chaoyang-001", "R1", 2), ("bj-chaoyang-001", "R1", 3)]) == {
            ("bj-chaoyang-001", "R1", 2): StoredReport("a" * 64, "k1")}
    finally:
        journal.close()


def test_report_rows_are_fsynced_and_the_first_digest_stays(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    modes: list[str] = []

    class Spy(sqlite3.Connection):
        def execute(self, sql, *args):  # type: ignore[no-untyped-def]
            if sql.startswith("PRAGMA synchronous"):
                modes.append(sql.split("=")[1])
            return super().execute(sql, *args)

    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *args, **kwargs: connect(*args, factory=Spy, **kwargs))
    journal = AckJournal(tmp_path / "acks.db")
    try:
        key = ("bj-chaoyang-001", "R1", 2)
        journal.put(("LIS", "F", "C1"), "d", "AA", b"ack")
        journal.flush()
        assert "FULL" not in modes  # an ACK alone is not fsynced
        journal.record_reports({key: StoredReport("a" * 64, "k1")})
        assert modes[-2:] == ["FULL", "NORMAL"]  # the report's transaction ran with synchronous=FULL
        journal.record_reports({key: StoredReport("b" * 64, "k1")})  # the first digest under a key stays
        assert journal.reports([key])[key].digest == "a" * 64
        journal.record_reports({key: StoredReport("c" * 64, "k2")})  # ... unless made under another pseudonym key
        assert journal.reports([key])[key] == StoredReport("c" * 64, "k2")
        assert journal.report_count() == 1
    finally:
        journal.close()


def test_concurrent_record_reports_share_commits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    journal = AckJournal(tmp_path / "acks.db")

    def record(n: int) -> None:
        for i in range(25):
            journal.record_reports({("bj-chaoyang-001", f"R{n}-{i}", 2): StoredReport(f"{n}{i}", "k1")})

    workers = [threading.Thread(target=record, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    try:
        assert journal.report_count() == 200 and journal._queued_reports == [] and journal._commit is None
    finally:
        journal.close()


def test_acks_past_the_resend_horizon_are_pruned_beside_the_running_journal_and_reports_are_kept(
        tmp_path: Path) -> None:
    """``hrx purge`` (prune_acks) beside a listener's open journal: a dry run counts, the run removes the ACKs
    older than the horizon only, a second run removes nothing; report digests stay."""
    from time import time

    from adapters.hl7.journal import prune_acks

    journal = AckJournal(tmp_path / "acks.db")
    try:
        for n in range(5):
            journal.put(("LIS", "BJCY", f"C{n}"), "d", "AA", b"MSH|ack")
        journal.record_reports({("bj-chaoyang-001", "R1", 1): StoredReport("0" * 64, "sm3-test")})
        journal.flush()
        now = time()
        with sqlite3.connect(journal.path) as db:  # three of them journaled 40 days ago
            db.execute("UPDATE hl7_acks SET stored_at = ? WHERE control_id IN ('C0', 'C1', 'C2')", (now - 40 * 86400,))
        assert prune_acks(journal.path, 30, now=now, dry_run=True) == 3 and journal.count() == 5
        seen: list[int] = []
        assert prune_acks(journal.path, 30, now=now, dry_run=False, batch=2, progress=seen.append) == 3
        assert sum(seen) == 3 and journal.count() == 2 and journal.report_count() == 1
        assert journal.get(("LIS", "BJCY", "C4")) is not None and journal.get(("LIS", "BJCY", "C0")) is None
        assert prune_acks(journal.path, 30, now=now, dry_run=False) == 0
    finally:
        journal.close()
    assert prune_acks(tmp_path / "none.db", 30, dry_run=False) == 0

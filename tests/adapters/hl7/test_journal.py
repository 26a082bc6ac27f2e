"""The ACK journal: no fsync before the ACK, yet replayed after a restart; group commit keeps the newest ACK."""
from __future__ import annotations

import threading

from adapters.hl7 import AckJournal, Hl7Receiver
from tests.adapters.hl7.hl7data import CHAOYANG


def test_ack_journal_skips_the_fsync_but_survives_a_restart(receiver) -> None:  # type: ignore[no-untyped-def]
    """WAL + synchronous=NORMAL, written by a group-committing thread: no fsync and no SQLite write before the
    ACK (the results are durable in Kafka, not here). A queued ACK is replayed at once, and a committed one
    by a new process (close() commits the queue)."""
    journal = receiver.journal
    with journal._reader() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL (FULL is 2)
    first = receiver.handle(CHAOYANG)
    assert receiver.handle(CHAOYANG).ack == first.ack  # whether or not the writer has committed it yet
    journal.close()
    reopened = AckJournal(journal.path)
    try:
        assert reopened.count() == 1
        again = Hl7Receiver("bj-chaoyang-001", receiver.book, receiver.pseudonymizer, receiver.publisher,
                            reopened).handle(CHAOYANG)
        assert again.duplicate and again.ack == first.ack and len(receiver.publisher.records) == 1
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

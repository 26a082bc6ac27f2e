"""The listener's journal: positive ACKs by duplicate key, and the content digest of every report accepted.

Rules implemented (docs/rules.md, "Delivery"):

- Duplicates: key (MSH-3, MSH-4, MSH-10). The positive ACK is recorded after the publish and before it is
  sent. A resend with the same key *and content* (keyed HMAC over the message without MSH-7) is published
  again (the broker may have lost the first copy; the store's natural key absorbs a second one) and only
  then gets the stored bytes replayed. The same key with other content is a conflict, refused by the
  receiver. Refusals are not journaled, so a message refused while the broker was down is processed when
  resent. A crash between publish and journal write only causes a republish, which the store absorbs.
- Reports: key (issuer, result ID, version), the SHA-256 of the report's content (the event without what
  varies between deliveries of the same report: :mod:`.conflicts`). Recorded after the publish and
  committed with an fsync *before* the ACK is sent: a lost row would let a later, different report under
  the same key be acknowledged and then dropped by the store. The first report accepted under a key
  stays; a row is a key and a 64-character digest, never the report itself.
- The ACK rows need no such care (Kafka, not the journal, holds the results): see :class:`AckJournal`.
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def prune_acks(path: Path, older_than_days: float, *, now: float | None = None, dry_run: bool = True,
               batch: int = 5000, progress: Callable[[int], None] | None = None) -> int:
    """Remove (or with ``dry_run`` count) the journaled ACKs older than ``older_than_days``: past the senders'
    resend horizon, a resend is no longer expected and would only be processed again, which the store's natural
    key absorbs. Report digests are kept (one bounded row per report: they guard against conflicting content).

    Safe beside the listener that owns the journal (WAL; short write transactions of ``batch`` rows). Returns
    how many were (or would be) removed; ``progress`` is called with the rows of each batch.
    """
    if not path.exists():
        return 0
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        if dry_run:
            count = int(db.execute("SELECT count(*) FROM hl7_acks WHERE stored_at < ?", (cutoff,)).fetchone()[0])
            if progress is not None:
                progress(count)
            return count
        removed = 0
        while True:
            gone = db.execute("DELETE FROM hl7_acks WHERE rowid IN (SELECT rowid FROM hl7_acks WHERE stored_at < ? "
                              "LIMIT ?)", (cutoff, batch)).rowcount
            removed += gone
            if progress is not None:
                progress(gone)
            if gone < batch:
                return removed
    finally:
        db.close()


@dataclass(frozen=True)
class StoredAck:
    """One journaled positive ACK: the message's content digest, the ACK code and bytes, and when (epoch s)."""

    digest: str
    code: str
    ack: bytes
    stored_at: float


@dataclass(frozen=True)
class StoredReport:
    """One accepted report's content digest and the pseudonym key (``key_id``) its patient was keyed with."""

    digest: str
    key_id: str


ReportKey = tuple[str, str, int]  # issuer, result ID, version


@dataclass
class _Commit:
    """One writer transaction that report rows wait for: set (under the journal's lock) once it ended."""

    done: bool = False
    failure: str | None = None


class AckJournal:
    """Positive ACKs by (MSH-3, MSH-4, MSH-10): SQLite in WAL mode with synchronous=NORMAL, group-committed;
    report digests by (issuer, result ID, version): the same writer, but fsynced before ``record_reports``
    returns.

    Recorded after the publish and before the ACK is sent, so a sender that missed the ACK and resends gets
    the same ACK, once its message was published again. Only positive ACKs are kept (a refusal must be
    retried).
    Rows older than ``retention_days`` are pruned when the journal opens; ACKs hold no patient data.

    Durability: the journal holds no result data, Kafka does (the ACK is only built once the broker
    acknowledged the publish); the journal only saves a resend from being processed again. So ``put`` does
    not wait for the disk: it hands the row to a writer thread, which commits whatever has queued up in one
    transaction (one commit per batch, not per message, and no SQLite work on the ACK path), and ``get``
    sees queued rows at once. The commit is not fsynced either (WAL, synchronous=NORMAL: the WAL is synced
    at checkpoints, and the database cannot be corrupted by a crash). What a crash can cost: the rows queued
    or committed in the last moments before it (a process crash: the few not yet committed; a power loss:
    also those since the last checkpoint). A resend of one of those messages is then processed as a new
    one and gets a new ACK; a resend is published again either way. An fsync or a commit per message
    before the ACK would buy nothing but ACK latency.

    Report digests are what the store cannot check (it keeps the first event under a natural key and drops
    any other silently), so ``record_reports`` waits until the writer committed them in a transaction run
    with synchronous=FULL (the WAL is fsynced at commit); concurrent messages share one commit, and a
    duplicate, whose reports are recorded already, costs none. They are not pruned (no retention yet): one
    row of bounded size (key, 64-character digest, key ID) per report accepted, however often delivered.
    """

    _UPSERT = ("INSERT INTO hl7_acks VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sending_application, sending_facility,"
               " control_id) DO UPDATE SET digest = excluded.digest, ack_code = excluded.ack_code, ack = excluded.ack,"
               " stored_at = excluded.stored_at")

    def __init__(self, path: Path, retention_days: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()  # guards the queue and pending rows below (never held across SQLite calls)
        self._changed = threading.Condition(self._lock)
        db = self._connect()
        db.execute(
            "CREATE TABLE IF NOT EXISTS hl7_acks (sending_application TEXT NOT NULL, sending_facility TEXT NOT NULL,"
            " control_id TEXT NOT NULL, digest TEXT NOT NULL, ack_code TEXT NOT NULL, ack BLOB NOT NULL,"
            " stored_at REAL NOT NULL, PRIMARY KEY (sending_application, sending_facility, control_id))")
        db.execute(
            "CREATE TABLE IF NOT EXISTS hl7_reports (issuer TEXT NOT NULL, result_id TEXT NOT NULL, version INTEGER"
            " NOT NULL, digest TEXT NOT NULL, key_id TEXT NOT NULL, stored_at REAL NOT NULL,"
            " PRIMARY KEY (issuer, result_id, version))")
        db.execute("DELETE FROM hl7_acks WHERE stored_at < ?", (time.time() - retention_days * 86400,))
        # Idle reading connections, one per concurrent reader (WAL: readers never wait for the writer). A
        # shared connection behind a lock made the connection threads queue up: the holder, back from SQLite,
        # waits for the GIL while the others wait for it.
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers.put(db)
        self._queued: list[tuple[tuple[str, str, str], StoredAck]] = []  # put(), not yet taken by the writer
        self._pending: dict[tuple[str, str, str], StoredAck] = {}  # put() but not yet committed: get() sees them
        self._writing = 0  # rows taken by the writer and not yet committed
        self._queued_reports: list[tuple[ReportKey, StoredReport, float]] = []  # record_reports(), not yet taken
        self._commit: _Commit | None = None  # the commit the queued report rows will be part of
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, args=(self._connect(),), name="hl7-ack-journal",
                                        daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit: see the class docstring
        return db

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            db = self._readers.get_nowait()
        except queue.Empty:
            db = self._connect()
        try:
            yield db
        finally:
            self._readers.put(db)

    def get(self, key: tuple[str, str, str]) -> StoredAck | None:
        with self._lock:
            queued = self._pending.get(key)
        if queued is not None:
            return queued
        # A row leaves _pending only once committed, so a row missed above is found here.
        with self._reader() as db:
            row = db.execute(
                "SELECT digest, ack_code, ack, stored_at FROM hl7_acks WHERE sending_application = ? AND "
                "sending_facility = ? AND control_id = ?", key).fetchone()
        return StoredAck(row[0], row[1], bytes(row[2]), row[3]) if row else None

    def reports(self, keys: list[ReportKey]) -> dict[ReportKey, StoredReport]:
        """The recorded digests of those of ``keys`` that were accepted before (committed, hence durable)."""
        found: dict[ReportKey, StoredReport] = {}
        with self._reader() as db:
            for key in keys:
                row = db.execute("SELECT digest, key_id FROM hl7_reports WHERE issuer = ? AND result_id = ? AND "
                                 "version = ?", key).fetchone()
                if row:
                    found[key] = StoredReport(row[0], row[1])
        return found

    def record_reports(self, rows: dict[ReportKey, StoredReport]) -> None:
        """Record accepted reports and return once they are committed and fsynced; sqlite3.Error if not.

        A key already recorded under the same pseudonym key keeps its first digest (the receiver refuses a
        different one before publishing); under another key (the pseudonym key was rotated) it is replaced.
        """
        if not rows:
            return
        now = time.time()
        with self._lock:
            if self._closing:
                raise sqlite3.ProgrammingError("the ACK journal is closed")
            self._queued_reports.extend((key, stored, now) for key, stored in rows.items())
            commit = self._commit = self._commit or _Commit()
            self._changed.notify_all()
            while not commit.done:
                self._changed.wait()
        if commit.failure is not None:
            raise sqlite3.OperationalError(f"report journal commit failed: {commit.failure}")

    def put(self, key: tuple[str, str, str], digest: str, code: str, ack: bytes) -> None:
        """Record a positive ACK; visible to ``get`` at once, committed by the writer thread shortly after."""
        stored = StoredAck(digest, code, ack, time.time())
        with self._lock:
            if self._closing:
                raise sqlite3.ProgrammingError("the ACK journal is closed")
            self._pending[key] = stored
            self._queued.append((key, stored))
            self._changed.notify_all()

    _RECORD = ("INSERT INTO hl7_reports VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (issuer, result_id, version) DO UPDATE"
               " SET digest = excluded.digest, key_id = excluded.key_id, stored_at = excluded.stored_at"
               " WHERE hl7_reports.key_id != excluded.key_id")

    def _write_loop(self, db: sqlite3.Connection) -> None:
        """Commit queued rows, all that queued up meanwhile in one transaction, until closed and drained.

        A transaction holding report rows runs with synchronous=FULL (fsynced at commit), the others with
        NORMAL; the callers of ``record_reports`` learn of the commit, or of its failure, from its _Commit.
        """
        try:
            while True:
                with self._lock:
                    while not self._queued and not self._queued_reports and not self._closing:
                        self._changed.wait()
                    if not self._queued and not self._queued_reports:
                        return
                    batch, self._queued = self._queued, []
                    reports, self._queued_reports = self._queued_reports, []
                    commit, self._commit = self._commit, None
                    self._writing = len(batch)
                failure = None
                try:
                    if reports:
                        db.execute("PRAGMA synchronous=FULL")
                    with db:  # one transaction for the batch
                        db.execute("BEGIN")
                        db.executemany(self._UPSERT, [(*key, a.digest, a.code, a.ack, a.stored_at) for key, a in batch])
                        db.executemany(self._RECORD, [(*key, r.digest, r.key_id, at) for key, r, at in reports])
                except sqlite3.Error as exc:  # ACK rows: those resends would be republished, which the store absorbs
                    log.error("hl7: journal write of %d ACK and %d report row(s) failed: %s", len(batch), len(reports),
                              exc)
                    failure = str(exc)
                finally:
                    if reports:
                        try:
                            db.execute("PRAGMA synchronous=NORMAL")
                        except sqlite3.Error:
                            pass
                with self._lock:
                    for key, stored in batch:
                        if self._pending.get(key) is stored:
                            del self._pending[key]  # committed (a later put for the same key stays pending)
                    self._writing = 0
                    if commit is not None:
                        commit.failure, commit.done = failure, True
                    self._changed.notify_all()
        finally:
            db.close()

    def flush(self) -> None:
        """Wait until everything ``put`` so far is committed."""
        with self._lock:
            while self._queued or self._writing:
                self._changed.wait()

    def report_count(self) -> int:
        with self._reader() as db:
            return int(db.execute("SELECT count(*) FROM hl7_reports").fetchone()[0])

    def count(self) -> int:
        self.flush()
        with self._reader() as db:
            return int(db.execute("SELECT count(*) FROM hl7_acks").fetchone()[0])

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the database (readers must have finished)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._changed.notify_all()
        self._writer.join()
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                return


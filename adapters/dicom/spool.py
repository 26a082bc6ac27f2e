"""The durable spool of received instances and the study assembler that publishes complete studies.

Spool: one SQLite file (``<spool>/index.db``) in WAL mode with ``synchronous=FULL``: a committed transaction
is fsynced to the WAL before ``commit`` returns, so an instance is durable once :meth:`Spool.add` returned —
that is the moment the SCP may answer 0x0000. The SOP Instance UID is the primary key, so a resent instance
is recognised (answered 0x0000, no new event). Records hold metadata and the patient's pseudonym, never
pixel data and never a raw resident ID.

Assembler (completeness policy): a study is *complete* once it has been stable — no new instance — for
``stable_seconds``. It is then built from all its spooled instances and published; only after Kafka
acknowledged is the study marked published (a crash in between republishes the same version, which the
store's natural key absorbs). An instance arriving after publication makes the study dirty again and, once
stable, it is republished as the next version (version = 1 + number of earlier publications).
"""
from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from adapters.dicom.metadata import (
    STATUS_DUPLICATE_SOP_INSTANCE,
    STATUS_PATIENT_CONFLICT,
    DicomError,
    InstanceRecord,
    build_report,
    utcnow,
)
from adapters.dead_letter import publish_dead_letters
from adapters.report import AdapterError
from adapters.pipeline import ResultPipeline
from adapters.private_files import PRIVATE_FILE_MODE, make_private_dir
from adapters.publish import BrokerUnavailable
from schemas.dead_letter import dead_letter_event
from schemas.resident_id import scrub

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, record TEXT NOT NULL, received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ix_instances_study ON instances (study_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY, pseudonym TEXT NOT NULL, changed_at REAL NOT NULL, dirty INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0, status TEXT, result_id TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0, last_error TEXT, rejected INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


#: Bytes the write-ahead log is grown to when the spool opens (about SQLite's automatic checkpoint interval
#: of 1000 pages): see :meth:`Spool._preallocate_wal`.
WAL_PREALLOCATE = 4 << 20


class SpoolUnavailable(RuntimeError):
    """The spool cannot commit (disk full, read-only, I/O error, backlog limit): answer 0xA700."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class StudyState:
    study_uid: str
    changed_at: float
    version: int
    status: str | None
    result_id: str | None
    attempts: int = 0


class Spool:
    """Thread-safe durable index of instances and studies (one connection, one lock)."""

    def __init__(self, directory: Path | str, max_pending_studies: int = 10000) -> None:
        self.directory = Path(directory)
        self.max_pending_studies = max_pending_studies
        self._lock = threading.Lock()
        try:
            make_private_dir(self.directory)
            new = not (self.directory / "index.db").exists()
            self._db = sqlite3.connect(self.directory / "index.db", check_same_thread=False,
                                       isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            _add_published_at(self._db)
            # A restart retries every waiting study at once (the back-off belonged to the previous process).
            self._db.execute("UPDATE studies SET next_attempt = 0 WHERE dirty = 1 AND next_attempt > 0")
            if new:
                os.chmod(self.directory / "index.db", PRIVATE_FILE_MODE)
                fsync_dir(self.directory)
            self._preallocate_wal()
        except (OSError, sqlite3.Error) as exc:
            raise SpoolUnavailable(f"spool {self.directory} is unusable: {exc}") from exc

    def _preallocate_wal(self) -> None:
        """Grow the write-ahead log to :data:`WAL_PREALLOCATE` bytes, then rewind it (nothing is truncated).

        Every commit fsyncs the WAL (synchronous=FULL). While the WAL grows, each of those syncs must also
        commit the file's new size to the file system journal: a second device flush per C-STORE. Once the
        WAL has its size, later commits overwrite it in place (SQLite rewinds it after a checkpoint and,
        with ``journal_size_limit`` at its default, never shrinks it) and the sync flushes the data only —
        the steady state of a long-running spool, here from the first instance after a start (the DICOM
        benchmark in bench/ measures the C-STORE path). The pages it wrote stay in the database file's free list and are reused by later inserts.
        """
        wal = self.directory / "index.db-wal"
        if wal.exists() and wal.stat().st_size >= WAL_PREALLOCATE:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT INTO state VALUES ('wal-preallocation', zeroblob(?))", (WAL_PREALLOCATE,))
            self._db.execute("DELETE FROM state WHERE name = 'wal-preallocation'")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("PRAGMA wal_checkpoint(RESTART)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- receiving -----------------------------------------------------------------------------------

    def add(self, record: InstanceRecord, now: float | None = None) -> bool:
        """Durably add an instance; False when its SOP Instance UID is already spooled with the same content
        (a resend).

        Raises DicomError 0x0111 (Duplicate SOP Instance) when the spooled instance under that UID says
        something else (another patient, study or metadata: a conflict is refused, never answered success
        and dropped), 0xC012 when the study already belongs to another patient, SpoolUnavailable when
        nothing could be committed.
        """
        now = time.time() if now is None else now
        pseudonym = record.patient["pseudonym"]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    spooled = self._db.execute("SELECT record FROM instances WHERE sop_uid = ?",
                                               (record.sop_instance_uid,)).fetchone()
                    if spooled is not None:
                        if InstanceRecord.from_dict(orjson.loads(spooled[0])).content() != record.content():
                            raise DicomError(STATUS_DUPLICATE_SOP_INSTANCE, "another instance was already received "
                                             "under this SOP Instance UID; send a new UID for changed content")
                        self._db.execute("ROLLBACK")
                        return False
                    row = self._db.execute("SELECT pseudonym FROM studies WHERE study_uid = ?",
                                           (record.study_instance_uid,)).fetchone()
                    if row is not None and row[0] != pseudonym:
                        raise DicomError(STATUS_PATIENT_CONFLICT, "study belongs to another patient")
                    if row is None:
                        pending = self._db.execute(
                            "SELECT count(*) FROM studies WHERE dirty = 1 AND rejected = 0").fetchone()[0]
                        if pending >= self.max_pending_studies:
                            raise SpoolUnavailable(f"{pending} studies wait for the broker (limit reached)")
                    self._db.execute("INSERT INTO instances VALUES (?, ?, ?, ?)",
                                     (record.sop_instance_uid, record.study_instance_uid,
                                      orjson.dumps(record.to_dict()).decode(), now))
                    self._db.execute(
                        "INSERT INTO studies (study_uid, pseudonym, changed_at, dirty) VALUES (?, ?, ?, 1) "
                        "ON CONFLICT (study_uid) DO UPDATE SET changed_at = excluded.changed_at, dirty = 1, "
                        "attempts = 0, next_attempt = 0",
                        (record.study_instance_uid, pseudonym, now))
                    self._db.execute("COMMIT")
                    return True
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise SpoolUnavailable(f"spool commit failed: {exc}") from exc

    # -- assembling ----------------------------------------------------------------------------------

    def ready(self, stable_seconds: float, now: float | None = None) -> list[StudyState]:
        """Dirty studies without a new instance for ``stable_seconds`` whose retry time has come."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT study_uid, changed_at, version, status, result_id, attempts FROM studies "
                "WHERE dirty = 1 AND rejected = 0 AND changed_at <= ? AND next_attempt <= ? ORDER BY changed_at",
                (now - stable_seconds, now)).fetchall()
        return [StudyState(*row) for row in rows]

    def records(self, study_uid: str) -> list[InstanceRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM instances WHERE study_uid = ? ORDER BY received_at, sop_uid",
                                    (study_uid,)).fetchall()
        return [InstanceRecord.from_dict(orjson.loads(r[0])) for r in rows]

    def mark_published(self, state: StudyState, version: int, status: str, result_id: str) -> None:
        """Record a publication; the study stays dirty if an instance arrived while it was being published."""
        with self._lock:
            self._db.execute(
                "UPDATE studies SET version = ?, status = ?, result_id = ?, attempts = 0, next_attempt = 0, "
                "last_error = NULL, dirty = CASE WHEN changed_at = ? THEN 0 ELSE 1 END, published_at = ? "
                "WHERE study_uid = ?", (version, status, result_id, state.changed_at, time.time(), state.study_uid))

    def mark_failed(self, state: StudyState, error: str, retry_in: float | None) -> None:
        """A failed publish: retry after ``retry_in`` seconds, or never (rejected) when None."""
        with self._lock:
            if retry_in is None:
                self._db.execute("UPDATE studies SET rejected = 1, last_error = ? WHERE study_uid = ?",
                                 (scrub(error)[:2000], state.study_uid))
            else:
                self._db.execute("UPDATE studies SET attempts = attempts + 1, next_attempt = ?, last_error = ? "
                                 "WHERE study_uid = ?", (time.time() + retry_in, scrub(error)[:2000],
                                                         state.study_uid))

    def counts(self) -> dict[str, int]:
        with self._lock:
            row = self._db.execute(
                "SELECT count(*), coalesce(sum(dirty = 1 AND rejected = 0), 0), coalesce(sum(version > 0), 0), "
                "coalesce(sum(rejected), 0) FROM studies").fetchone()
            instances = self._db.execute("SELECT count(*) FROM instances").fetchone()[0]
        return {"studies": row[0], "pending": row[1], "published": row[2], "rejected": row[3],
                "instances": instances}

    def study(self, study_uid: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._db.execute("SELECT * FROM studies WHERE study_uid = ?", (study_uid,))
            row = cur.fetchone()
            return dict(zip([c[0] for c in cur.description], row, strict=True)) if row else None

    # -- small durable key/value state (the puller's watermark) -----------------------------------------

    def get_state(self, name: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def set_state(self, name: str, value: Any) -> None:
        with self._lock:
            try:
                self._db.execute("INSERT INTO state VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = "
                                 "excluded.value", (name, orjson.dumps(value).decode()))
            except sqlite3.Error as exc:
                raise SpoolUnavailable(f"spool commit failed: {exc}") from exc


def _add_published_at(db: sqlite3.Connection) -> None:
    """Spools made before retention existed have no ``studies.published_at``: add it (NULL: the purge then
    counts from the study's last change, which a publication follows)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(studies)")}
    if "published_at" not in columns:
        db.execute("ALTER TABLE studies ADD COLUMN published_at REAL")


@dataclass
class SpoolPurge:
    """What :func:`purge_published` found (and, unless a dry run, removed)."""

    spool: Path
    studies: int = 0
    instances: int = 0


#: The studies a purge may remove: published, unchanged since, not waiting, and published before the cutoff.
_PURGEABLE = ("version > 0 AND dirty = 0 AND rejected = 0 AND coalesce(published_at, changed_at) <= ?")


def purge_published(directory: Path | str, older_than_days: float, *, now: float | None = None,
                    dry_run: bool = True, progress: Callable[[int], None] | None = None) -> SpoolPurge:
    """Remove the spooled instances (and the study's row) of every study published at least ``older_than_days``
    ago and unchanged since; with ``dry_run``, only count them.

    Safe beside the listener that owns the spool: each study goes in its own write transaction, which checks
    the conditions again (an instance that arrived meanwhile made the study dirty: it stays). A study's
    instances are all that a later version would be built from, so a study is removed whole; an instance of it
    that arrives afterwards starts a new study, whose event under the same result id and version 1 the exchange
    refuses as a conflict (dead-lettered, never silently merged): the grace period must exceed how long the
    modalities may still send to a finished study. ``progress`` is called with 1 per study examined.
    """
    path = Path(directory) / "index.db"
    found = SpoolPurge(Path(directory))
    if not path.exists():
        return found
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        _add_published_at(db)
        studies = [row[0] for row in db.execute(f"SELECT study_uid FROM studies WHERE {_PURGEABLE}", (cutoff,))]
        for study_uid in studies:
            if dry_run:
                count = db.execute("SELECT count(*) FROM instances WHERE study_uid = ?", (study_uid,)).fetchone()[0]
                found.studies, found.instances = found.studies + 1, found.instances + count
            else:
                db.execute("BEGIN IMMEDIATE")
                try:
                    still = db.execute(f"SELECT 1 FROM studies WHERE study_uid = ? AND {_PURGEABLE}",
                                       (study_uid, cutoff)).fetchone()
                    if still:
                        gone = db.execute("DELETE FROM instances WHERE study_uid = ?", (study_uid,)).rowcount
                        db.execute("DELETE FROM studies WHERE study_uid = ?", (study_uid,))
                        found.studies, found.instances = found.studies + 1, found.instances + gone
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            if progress is not None:
                progress(1)
    except sqlite3.Error as exc:
        raise SpoolUnavailable(f"spool {directory}: {exc}") from exc
    finally:
        db.close()
    return found


def read_state(directory: Path | str, name: str) -> Any:
    """A state value read through a read-only connection (``None`` if the spool or the value is absent).

    For status queries beside a running spool owner: opening a :class:`Spool` writes (it resets back-offs).
    """
    path = Path(directory) / "index.db"
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise SpoolUnavailable(f"spool {directory} is unreadable: {exc}") from exc
    return orjson.loads(row[0]) if row else None


def broker_reachable(bootstrap: str, timeout: float = 1.0) -> bool:
    """A TCP probe of the bootstrap servers (liveness only; publishing still waits for acknowledgements)."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
            return True
        except (OSError, ValueError):
            continue
    return False


@dataclass
class AssemblerStats:
    published: int = 0
    publish_failures: int = 0
    rejected: int = 0
    last_error: str | None = None
    broker_down_since: float | None = None


@dataclass
class StudyAssembler:
    """Publishes studies that have been stable for ``stable_seconds`` (run it in a thread)."""

    spool: Spool
    pipeline: ResultPipeline
    institution: str
    stable_seconds: float = 30.0
    retrieval: Callable[[list[InstanceRecord]], dict[str, Any] | None] | None = None
    max_backoff: float = 30.0
    adapter: str = "dicom"
    stats: AssemblerStats = field(default_factory=AssemblerStats)

    def run(self, stop: threading.Event) -> None:
        poll = max(0.05, min(1.0, self.stable_seconds / 4))
        while not stop.is_set():
            try:
                self.assemble_once()
            except Exception:
                log.exception("study assembler iteration failed")
            stop.wait(poll)

    def assemble_once(self, now: float | None = None) -> int:
        """Publish every ready study; returns how many were published."""
        done = 0
        for state in self.spool.ready(self.stable_seconds, now):
            if self.publish_study(state):
                done += 1
            elif self.stats.broker_down_since is not None:
                break  # the broker is away: do not hammer it with the rest of the backlog
        return done

    def publish_study(self, state: StudyState) -> bool:
        records = self.spool.records(state.study_uid)
        version = state.version + 1
        try:
            report = build_report(records, institution=self.institution, version=version,
                                  result_id=state.result_id, previous_status=state.status,
                                  retrieval=self.retrieval(records) if self.retrieval else None,
                                  received_at=utcnow())
            event = replace(self.pipeline, received_at=utcnow()).imaging_event(report, self.adapter)
        except AdapterError as exc:
            self._reject(state, str(exc))
            return False
        try:
            self.pipeline.publish([event])
        except BrokerUnavailable as exc:
            self.stats.publish_failures += 1
            self.stats.last_error = scrub(str(exc))
            if self.stats.broker_down_since is None:
                self.stats.broker_down_since = time.time()
            self.spool.mark_failed(state, str(exc), min(self.max_backoff, 0.5 * 2 ** min(state.attempts, 6)))
            log.warning("study not published (broker unavailable), retrying: %s", scrub(str(exc)))
            return False
        self.stats.broker_down_since = None
        self.spool.mark_published(state, version, event["status"], event["result_id"])
        self.stats.published += 1
        log.info("published study %s as %s v%d (%d instance(s), item %s)", state.study_uid, event["result_id"],
                 version, len(records), event["item"]["unified_code"],
                 extra={"door": "dicom", "message_id": event["source"]["message_id"], "event_id": event["event_id"]})
        return True

    def _reject(self, state: StudyState, error: str) -> None:
        """A study that can never become an event: dead-letter it (scrubbed) and stop retrying it."""
        self.stats.rejected += 1
        self.stats.last_error = scrub(error)
        letter = dead_letter_event(f"DICOM study {state.study_uid}: {error}", None, adapter=self.adapter,
                                   institution=self.institution)
        try:
            if self.pipeline.publisher is not None:
                publish_dead_letters(self.pipeline.publisher, [letter])
        except BrokerUnavailable as exc:
            self.spool.mark_failed(state, f"{error} (dead letter pending: {exc})", self.max_backoff)
            return
        self.spool.mark_failed(state, error, None)
        log.warning("study %s rejected: %s", state.study_uid, scrub(error))


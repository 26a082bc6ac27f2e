"""Retention (``hrx purge``): what the exchange and its doors keep, pruned by the policies of :class:`Retention`.

Every step is a dry run unless told otherwise, idempotent (a second run finds nothing more) and safe while the
exchange serves: rows go in short transactions that check their conditions again, so a row that changed
meanwhile (a study that received an instance, a result that received a version) stays.

- DICOM spools: instances of a study published and unchanged for ``dicom_spool_days``
  (:func:`adapters.dicom.spool.purge_published`).
- HL7 ACK journals: ACKs older than ``hl7_ack_days``, the senders' resend horizon
  (:func:`adapters.hl7.journal.prune_acks`).
- Dead letters (store): those *resolved* — the result they carried (issuer, result id, version) is stored since,
  at that version (a later delivery was accepted) or a later one (for a conflict: the sender sent a new
  version) — and dead-lettered at least ``dead_letter_days`` ago. A dead letter that names no result, or whose
  result is still missing, is kept: someone has to look at it.
- Results (store): with ``results_days`` set (default: keep), every version and value of each result whose
  current version was reported that long ago. Decisions, feedback and presentations that name it are records
  of what was done and stay.
- Audit records: never removed here. The trail is a hash chain (``exchange/audit_chain.py``) anchored at its
  first record; ``HRX_RETAIN_AUDIT_DAYS`` is checked (never below 3 years, PIPL §56) for the day the chain can
  be cut at an anchored head.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, select, tuple_
from sqlalchemy import Engine as Database

from exchange.config import Retention
from exchange.engine import CONFLICT
from exchange.store.models import DeadLetter, Observation, Result, ResultHead

#: (total, label) → a context manager whose value is ``advance(n)``: the progress display.
Progress = Callable[[int, str], AbstractContextManager[Callable[[int], None]]]

#: Rows per transaction in the store.
BATCH = 500


@dataclass
class Step:
    """One retention step's outcome: what it looked at, how many it removed (or would remove)."""

    what: str
    policy: str
    found: int = 0
    detail: str = ""

    def line(self, dry_run: bool) -> str:
        verb = "would remove" if dry_run else "removed"
        return f"{self.what}: {verb} {self.found}{' ' + self.detail if self.detail else ''} ({self.policy})"


class _NoProgress:
    def __init__(self, total: int, label: str) -> None:
        pass

    def __enter__(self) -> Callable[[int], None]:
        return lambda n: None

    def __exit__(self, *exc: object) -> None:
        return None


def _days(days: float) -> str:
    return f"{days:g} day(s)"


def spool_dirs(var_dir: Path, extra: Sequence[Path] = ()) -> list[Path]:
    """The DICOM spools under ``var_dir`` (``dicom-spool``, ``dicom-spool-*`` of ``hrx up``'s listeners,
    ``dicom-pull-spool``) and those given."""
    found = sorted(p for p in var_dir.glob("dicom-*spool*") if (p / "index.db").exists())
    return list(dict.fromkeys([*found, *extra]))


def purge_spools(directories: Sequence[Path], days: float | None, *, dry_run: bool, now: datetime,
                 progress: Progress = _NoProgress) -> list[Step]:
    from adapters.dicom.spool import purge_published

    if days is None:
        return [Step("DICOM spools", "HRX_RETAIN_DICOM_SPOOL_DAYS=keep")]
    steps = []
    for directory in directories:
        with progress(0, f"spool {directory.name}") as advance:
            done = purge_published(directory, days, now=now.timestamp(), dry_run=dry_run, progress=advance)
        steps.append(Step(f"DICOM spool {directory}", f"studies published more than {_days(days)} ago",
                          done.instances, f"instance(s) of {done.studies} study(ies)"))
    return steps


def purge_hl7_journal(path: Path, days: float | None, *, dry_run: bool, now: datetime,
                      progress: Progress = _NoProgress) -> Step:
    from adapters.hl7.journal import prune_acks

    if days is None:
        return Step(f"HL7 ACK journal {path}", "HRX_RETAIN_HL7_ACK_DAYS=keep")
    if not path.exists():
        return Step(f"HL7 ACK journal {path}", "none here")
    with progress(0, "HL7 ACKs") as advance:
        found = prune_acks(path, days, now=now.timestamp(), dry_run=dry_run, progress=advance)
    return Step(f"HL7 ACK journal {path}", f"ACKs older than {_days(days)}, the senders' resend horizon", found,
                "ACK(s)")


def _letter_result(payload: str | None) -> tuple[str, str, int] | None:
    """The (issuer, result id, version) a dead letter's payload carries, if it is a result event that names one."""
    try:
        event: Any = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    issuer, result_id, version = event.get("issuer"), event.get("result_id"), event.get("version")
    if isinstance(issuer, str) and isinstance(result_id, str) and isinstance(version, int):
        return issuer, result_id, version
    return None


def _resolved_letters(conn: Connection, cutoff: datetime, after_id: int) -> tuple[list[int], int, int]:
    """The ids of resolved dead letters older than ``cutoff`` among the next :data:`BATCH` with an id above
    ``after_id``, how many were looked at and the last id looked at."""
    rows = conn.execute(select(DeadLetter.id, DeadLetter.payload, DeadLetter.error)
                        .where(DeadLetter.failed_at <= cutoff, DeadLetter.id > after_id)
                        .order_by(DeadLetter.id).limit(BATCH)).all()
    if not rows:
        return [], 0, after_id
    named = {row.id: (_letter_result(row.payload), CONFLICT in row.error) for row in rows}
    keys = {found[:2] for found, _ in named.values() if found is not None}
    heads = dict(((h.issuer, h.result_id), h.version) for h in conn.execute(
        select(ResultHead.issuer, ResultHead.result_id, ResultHead.version)
        .where(tuple_(ResultHead.issuer, ResultHead.result_id).in_(sorted(keys))))) if keys else {}
    resolved = []
    for letter_id, (found, conflict) in named.items():
        if found is None:
            continue
        head = heads.get(found[:2])
        if head is not None and (head > found[2] or (head == found[2] and not conflict)):
            resolved.append(letter_id)
    return resolved, len(rows), rows[-1].id


def purge_dead_letters(database: Database, days: float | None, *, dry_run: bool, now: datetime,
                       progress: Progress = _NoProgress) -> Step:
    if days is None:
        return Step("dead letters", "HRX_RETAIN_DEAD_LETTERS_DAYS=keep")
    cutoff = now - timedelta(days=days)
    with database.connect() as conn:
        total = int(conn.scalar(select(func.count()).select_from(DeadLetter).where(DeadLetter.failed_at <= cutoff))
                    or 0)
    found = 0
    after = 0
    with progress(total, "dead letters") as advance:
        while True:
            with database.begin() as conn:
                resolved, examined, last = _resolved_letters(conn, cutoff, after)
                if not examined:
                    break
                if resolved and not dry_run:
                    conn.execute(delete(DeadLetter).where(DeadLetter.id.in_(resolved)))
            found += len(resolved)
            advance(examined)
            after = last
    return Step("dead letters", f"resolved ones dead-lettered more than {_days(days)} ago", found)


def _old_heads(conn: Connection, cutoff: datetime, limit: int) -> list[tuple[str, str]]:
    return [(r.issuer, r.result_id) for r in conn.execute(
        select(ResultHead.issuer, ResultHead.result_id).where(ResultHead.reported_at < cutoff)
        .order_by(ResultHead.reported_at, ResultHead.issuer, ResultHead.result_id).limit(limit))]


def purge_results(database: Database, days: float | None, *, dry_run: bool, now: datetime,
                  progress: Progress = _NoProgress) -> Step:
    if days is None:
        return Step("results", "HRX_RETAIN_RESULTS_DAYS=keep (the default)")
    cutoff = now - timedelta(days=days)
    policy = f"every version of results whose current version was reported more than {_days(days)} ago"
    with database.connect() as conn:
        total = int(conn.scalar(select(func.count()).select_from(ResultHead).where(ResultHead.reported_at < cutoff))
                    or 0)
    if dry_run:
        with progress(total, "results") as advance:
            advance(total)
        return Step("results", policy, total, "result(s)")
    removed = 0
    with progress(total, "results") as advance:
        while True:
            with database.begin() as conn:
                keys = _old_heads(conn, cutoff, BATCH)  # read again inside the transaction that deletes them
                if not keys:
                    break
                pks = select(Result.id).where(tuple_(Result.issuer, Result.result_id).in_(keys)).scalar_subquery()
                conn.execute(delete(ResultHead).where(tuple_(ResultHead.issuer, ResultHead.result_id).in_(keys),
                                                      ResultHead.reported_at < cutoff))
                conn.execute(delete(Observation).where(Observation.result_pk.in_(pks)))
                conn.execute(delete(Result).where(tuple_(Result.issuer, Result.result_id).in_(keys)))
            removed += len(keys)
            advance(len(keys))
    return Step("results", policy, removed, "result(s)")


def audit_step(retention: Retention) -> Step:
    kept = ("HRX_RETAIN_AUDIT_DAYS=keep" if retention.audit_days is None
            else f"HRX_RETAIN_AUDIT_DAYS={retention.audit_days:g}")
    return Step("audit records", f"{kept}; never before 3 years (PIPL §56); the hash-chained trail is not pruned by "
                "this version", 0)


def purge(database: Database | None, retention: Retention, *, var_dir: Path, spools: Sequence[Path] = (),
          hl7_journal: Path | None = None, dry_run: bool = True, now: datetime | None = None,
          progress: Progress = _NoProgress) -> Iterator[Step]:
    """Every retention step in turn (the store's only with a ``database``), each yielded once done."""
    now = now or datetime.now(UTC)
    yield from purge_spools(spool_dirs(var_dir, spools), retention.dicom_spool_days, dry_run=dry_run, now=now,
                            progress=progress)
    yield purge_hl7_journal(hl7_journal or var_dir / "hl7-acks.db", retention.hl7_ack_days, dry_run=dry_run,
                            now=now, progress=progress)
    if database is not None:
        yield purge_dead_letters(database, retention.dead_letter_days, dry_run=dry_run, now=now, progress=progress)
        yield purge_results(database, retention.results_days, dry_run=dry_run, now=now, progress=progress)
    yield audit_step(retention)

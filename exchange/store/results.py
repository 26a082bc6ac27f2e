"""Writing result events into the store, idempotently, and reading a patient's current results.

Rules implemented (DOMAIN.md §8):
- the natural key (issuer, result_id, version) is UNIQUE; a redelivered event inserts nothing
  (``ON CONFLICT DO NOTHING``), so at-least-once delivery from Kafka stores every result exactly once;
- a higher version (correction, amendment, cancellation) moves the head; a stale resend of a lower version
  is stored for the record but never moves the head backwards (``ON CONFLICT DO UPDATE … WHERE``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, String, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from exchange.events import parse_timestamp
from exchange.store.models import DeadLetter, Observation, Result, ResultHead


@dataclass(frozen=True)
class Delivery:
    """A validated event and where it was consumed from."""

    event: dict[str, Any]
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass
class IngestReport:
    stored: int = 0
    duplicates: int = 0
    superseded: int = 0  # stored, but an equal or higher version already was the head
    dead_letters: int = 0


@dataclass(frozen=True)
class StoredObservation:
    seq: int
    unified_code: str | None
    local_code: str
    local_system: str | None
    value: float | None
    value_text: str | None
    unit: str | None
    ref_low: float | None
    ref_high: float | None
    ref_text: str | None
    interpretation: str | None


@dataclass(frozen=True)
class StoredResult:
    """The current version of one result as the API shows it."""

    pk: int
    issuer: str
    result_id: str
    version: int
    kind: str
    status: str
    patient: str
    unified_code: str | None
    local_code: str
    collected_at: datetime | None
    reported_at: datetime
    event: dict[str, Any]
    observations: tuple[StoredObservation, ...] = field(default=())


def _insert(conn: Connection, table: Any) -> Any:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect}")


def observation_rows(result_pk: int, event: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for obs in event.get("observations") or ():
        ref = obs.get("reference_range") or {}
        item = obs["item"]
        rows.append({
            "result_pk": result_pk, "seq": obs["seq"], "unified_code": item.get("unified_code"),
            "local_code": item["local_code"], "local_system": item.get("local_system"),
            "value": obs.get("value"), "value_text": obs.get("value_text"), "unit": obs.get("unit"),
            "ref_low": ref.get("low"), "ref_high": ref.get("high"), "ref_text": ref.get("text"),
            "interpretation": obs.get("interpretation"),
        })
    return rows


def ingest(conn: Connection, deliveries: Iterable[Delivery]) -> IngestReport:
    """Store ``deliveries`` inside the caller's transaction; safe to call again with the same events."""
    report = IngestReport()
    results, heads, observations = Result.__table__, ResultHead.__table__, Observation.__table__
    now = datetime.now(UTC)
    for delivery in deliveries:
        event = delivery.event
        kind = "lab" if event["schema"] == "hr.lab-result.v1" else "imaging"
        collected = event.get("collected_at")
        reported = parse_timestamp(event["reported_at"])
        row = {
            "issuer": event["issuer"], "result_id": event["result_id"], "version": event["version"],
            "kind": kind, "status": event["status"], "patient": event["patient"]["pseudonym"],
            "unified_code": event["item"].get("unified_code"), "local_code": event["item"]["local_code"],
            "mapping_version": event["item"].get("mapping_version"),
            "collected_at": parse_timestamp(collected) if collected else None, "reported_at": reported,
            "stored_at": now, "event": orjson.dumps(event).decode(),
            "source_topic": delivery.topic, "source_partition": delivery.partition,
            "source_offset": delivery.offset,
        }
        stmt = (_insert(conn, results).values(row)
                .on_conflict_do_nothing(index_elements=["issuer", "result_id", "version"])
                .returning(results.c.id))
        pk = conn.execute(stmt).scalar_one_or_none()
        if pk is None:
            report.duplicates += 1
            continue
        report.stored += 1
        obs_rows = observation_rows(pk, event)
        if obs_rows:
            conn.execute(observations.insert(), obs_rows)
        head = _insert(conn, heads).values(
            issuer=row["issuer"], result_id=row["result_id"], version=row["version"], result_pk=pk,
            patient=row["patient"], reported_at=reported)
        moved = conn.execute(head.on_conflict_do_update(
            index_elements=["issuer", "result_id"],
            set_={"version": head.excluded.version, "result_pk": head.excluded.result_pk,
                  "patient": head.excluded.patient, "reported_at": head.excluded.reported_at},
            where=heads.c.version < head.excluded.version,
        ).returning(heads.c.version)).scalar_one_or_none()
        if moved is None:
            report.superseded += 1
    return report


def record_dead_letter(conn: Connection, topic: str, partition: int, offset: int, error: str,
                       payload: str | None) -> bool:
    """Keep a dead letter once per origin; returns False when it was already recorded."""
    table = DeadLetter.__table__
    stmt = (_insert(conn, table)
            .values(topic=topic, partition=partition, offset=offset, error=error, payload=payload,
                    failed_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["topic", "partition", "offset"])
            .returning(table.c.id))
    return conn.execute(stmt).scalar_one_or_none() is not None


def current_results(conn: Connection, patient: str) -> list[StoredResult]:
    """The head version of every result of ``patient``, newest first, with observations."""
    rows = conn.execute(
        select(Result.__table__).join(ResultHead.__table__, ResultHead.result_pk == Result.id)
        .where(ResultHead.patient == patient).order_by(ResultHead.reported_at.desc(), Result.id.desc())
    ).mappings().all()
    return _with_observations(conn, rows)


def _with_observations(conn: Connection, rows: Sequence[Any]) -> list[StoredResult]:
    pks = [r["id"] for r in rows]
    by_pk: dict[int, list[StoredObservation]] = {pk: [] for pk in pks}
    if pks:
        for o in conn.execute(select(Observation.__table__).where(Observation.result_pk.in_(pks))
                              .order_by(Observation.result_pk, Observation.seq)).mappings():
            by_pk[o["result_pk"]].append(StoredObservation(
                seq=o["seq"], unified_code=o["unified_code"], local_code=o["local_code"],
                local_system=o["local_system"], value=o["value"], value_text=o["value_text"], unit=o["unit"],
                ref_low=o["ref_low"], ref_high=o["ref_high"], ref_text=o["ref_text"],
                interpretation=o["interpretation"]))
    return [StoredResult(
        pk=r["id"], issuer=r["issuer"], result_id=r["result_id"], version=r["version"], kind=r["kind"],
        status=r["status"], patient=r["patient"], unified_code=r["unified_code"], local_code=r["local_code"],
        collected_at=r["collected_at"], reported_at=r["reported_at"], event=orjson.loads(r["event"]),
        observations=tuple(by_pk[r["id"]])) for r in rows]


@dataclass(frozen=True)
class UnmappedCode:
    issuer: str
    local_code: str
    local_system: str | None
    results: int


def unmapped_codes(conn: Connection, issuer: str | None = None) -> list[UnmappedCode]:
    """Local codes without a unified code in the current versions of stored results, most frequent first."""
    obs = (select(Result.issuer, Observation.local_code, Observation.local_system,
                  func.count(func.distinct(Result.id)).label("n"))
           .join(ResultHead, ResultHead.result_pk == Result.id)
           .join(Observation, Observation.result_pk == Result.id)
           .where(Observation.unified_code.is_(None))
           .group_by(Result.issuer, Observation.local_code, Observation.local_system))
    imaging = (select(Result.issuer, Result.local_code, literal(None, String()).label("local_system"),
                      func.count().label("n"))
               .join(ResultHead, ResultHead.result_pk == Result.id)
               .where(Result.kind == "imaging", Result.unified_code.is_(None))
               .group_by(Result.issuer, Result.local_code))
    if issuer is not None:
        obs, imaging = obs.where(Result.issuer == issuer), imaging.where(Result.issuer == issuer)
    rows = [UnmappedCode(*r) for q in (obs, imaging) for r in conn.execute(q).all()]
    return sorted(rows, key=lambda u: (-u.results, u.issuer, u.local_code))

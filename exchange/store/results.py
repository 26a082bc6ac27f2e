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
from functools import cached_property
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, String, case, func, literal, select
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


class StoredObservation(NamedTuple):
    """One stored value (a tuple: a long history builds thousands of these per read)."""

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


@dataclass
class StoredResult:
    """The current version of one result as the API shows it (read-only by convention; not frozen because
    frozen dataclasses cost several times more to build, and a check builds one per prior result)."""

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
    event_json: str | None = field(repr=False)  # None when not read (lab results in a patient's listing)
    observations: tuple[StoredObservation, ...] = field(default=())

    @cached_property
    def event(self) -> dict[str, Any]:
        """The stored event, parsed on first use; empty when it was not read."""
        return orjson.loads(self.event_json) if self.event_json else {}


def _insert(conn: Connection, table: Any) -> Any:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect}")


def insert_ignoring(conn: Connection, table: Any, key: list[str]) -> Any:
    """``INSERT … ON CONFLICT (key) DO NOTHING`` on either backend."""
    return _insert(conn, table).on_conflict_do_nothing(index_elements=key)


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
    # Set-based: one multi-row INSERT … ON CONFLICT DO NOTHING RETURNING for the versions, one bulk insert for
    # their observations and one bulk monotonic upsert for the heads, instead of three statements per event.
    # Same outcome and counts as storing the deliveries one after the other, in order.
    report = IngestReport()
    results, heads, observations = Result.__table__, ResultHead.__table__, Observation.__table__
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    seen: set[tuple[str, str, int]] = set()
    for delivery in deliveries:
        event = delivery.event
        key = (event["issuer"], event["result_id"], event["version"])
        if key in seen:  # the same version twice in one batch: the second one is a redelivery
            report.duplicates += 1
            continue
        seen.add(key)
        item = event["item"]
        collected = event.get("collected_at")
        rows.append({
            "issuer": key[0], "result_id": key[1], "version": key[2],
            "kind": "lab" if event["schema"] == "hr.lab-result.v1" else "imaging",
            "status": event["status"], "patient": event["patient"]["pseudonym"],
            "unified_code": item.get("unified_code"), "local_code": item["local_code"],
            "mapping_version": item.get("mapping_version"),
            "collected_at": parse_timestamp(collected) if collected else None,
            "reported_at": parse_timestamp(event["reported_at"]),
            "stored_at": now, "event": orjson.dumps(event).decode(),
            "source_topic": delivery.topic, "source_partition": delivery.partition,
            "source_offset": delivery.offset,
        })
        events.append(event)
    if not rows:
        return report
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        # The batch travels as one JSON document unpacked by json_to_recordset(): one short statement, one C
        # serialization (orjson) instead of a Python adapter call per value; PostgreSQL parses it.
        found = conn.exec_driver_sql(
            "INSERT INTO results (issuer, result_id, version, kind, status, patient, unified_code, local_code, "
            "mapping_version, collected_at, reported_at, stored_at, event, source_topic, source_partition, "
            "source_offset) SELECT * FROM json_to_recordset(%s::json) AS x(issuer varchar, result_id varchar, "
            "version int, kind varchar, status varchar, patient varchar, unified_code varchar, local_code varchar, "
            "mapping_version varchar, collected_at timestamptz, reported_at timestamptz, stored_at timestamptz, "
            "event text, source_topic varchar, source_partition int, source_offset bigint) "
            "ON CONFLICT (issuer, result_id, version) DO NOTHING RETURNING id, issuer, result_id, version",
            (orjson.dumps(rows).decode(),))
    else:
        found = conn.execute(_insert(conn, results)
                             .on_conflict_do_nothing(index_elements=["issuer", "result_id", "version"])
                             .returning(results.c.id, results.c.issuer, results.c.result_id, results.c.version),
                             rows)
    inserted = {(issuer, result_id, version): pk for pk, issuer, result_id, version in found}
    obs_rows: list[dict[str, Any]] = []
    new_heads: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row, event in zip(rows, events):
        pk = inserted.get((row["issuer"], row["result_id"], row["version"]))
        if pk is None:
            report.duplicates += 1
            continue
        report.stored += 1
        obs_rows += observation_rows(pk, event)
        new_heads.setdefault((row["issuer"], row["result_id"]), []).append({
            "issuer": row["issuer"], "result_id": row["result_id"], "version": row["version"], "result_pk": pk,
            "patient": row["patient"], "reported_at": row["reported_at"]})
    if obs_rows and postgres:
        conn.exec_driver_sql(
            "INSERT INTO observations (result_pk, seq, unified_code, local_code, local_system, value, value_text, "
            "unit, ref_low, ref_high, ref_text, interpretation) SELECT * FROM json_to_recordset(%s::json) AS "
            "x(result_pk bigint, seq int, unified_code varchar, local_code varchar, local_system varchar, "
            "value float8, value_text text, unit varchar, ref_low float8, ref_high float8, ref_text varchar, "
            "interpretation varchar)", (orjson.dumps(obs_rows).decode(),))
    elif obs_rows:
        conn.execute(observations.insert(), obs_rows)
    head = _insert(conn, heads)
    upsert = head.on_conflict_do_update(
        index_elements=["issuer", "result_id"],
        set_={"version": head.excluded.version, "result_pk": head.excluded.result_pk,
              "patient": head.excluded.patient, "reported_at": head.excluded.reported_at},
        where=heads.c.version < head.excluded.version,
    ).returning(heads.c.version)
    # One row per result in a bulk statement, in key order (a stable lock order between engine consumers);
    # several new versions of one result in the same batch go one by one, in delivery order.
    single = [versions[0] for key, versions in sorted(new_heads.items()) if len(versions) == 1]
    if single and postgres:
        moved = len(conn.exec_driver_sql(
            "INSERT INTO result_heads AS h (issuer, result_id, version, result_pk, patient, reported_at) "
            "SELECT * FROM json_to_recordset(%s::json) AS x(issuer varchar, result_id varchar, version int, "
            "result_pk bigint, patient varchar, reported_at timestamptz) "
            "ON CONFLICT (issuer, result_id) DO UPDATE SET version = excluded.version, "
            "result_pk = excluded.result_pk, patient = excluded.patient, reported_at = excluded.reported_at "
            "WHERE h.version < excluded.version RETURNING h.version", (orjson.dumps(single).decode(),)).all())
        report.superseded += len(single) - moved
    elif single:
        moved = len(conn.execute(upsert, single).all())
        report.superseded += len(single) - moved
    for versions in new_heads.values():
        if len(versions) > 1:
            for version in versions:
                if conn.execute(upsert.values(version)).scalar_one_or_none() is None:
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


# The stored event is only needed for imaging results (report text, study, retrieval pointer): a lab result's
# values are in ``observations``, and shipping every lab event's JSON would triple the read.
_RESULT_COLUMNS = (Result.id, Result.issuer, Result.result_id, Result.version, Result.kind, Result.status,
                   Result.patient, Result.unified_code, Result.local_code, Result.collected_at, Result.reported_at,
                   case((Result.kind == "imaging", Result.event), else_=None).label("event"))
_OBSERVATION_COLUMNS = (Observation.result_pk, Observation.seq, Observation.unified_code, Observation.local_code,
                        Observation.local_system, Observation.value, Observation.value_text, Observation.unit,
                        Observation.ref_low, Observation.ref_high, Observation.ref_text, Observation.interpretation)


def current_results(conn: Connection, patient: str) -> list[StoredResult]:
    """The head version of every result of ``patient``, newest first, with observations.

    Two indexed queries by patient (results through their heads, observations through the same join), so
    the cost grows with the patient's history, not with the size of the store.
    """
    rows = conn.execute(
        select(*_RESULT_COLUMNS).join(ResultHead, ResultHead.result_pk == Result.id)
        .where(ResultHead.patient == patient).order_by(ResultHead.reported_at.desc(), Result.id.desc())).all()
    observations = conn.execute(
        select(*_OBSERVATION_COLUMNS).join(ResultHead, ResultHead.result_pk == Observation.result_pk)
        .where(ResultHead.patient == patient).order_by(Observation.result_pk, Observation.seq)).all()
    return _assemble(rows, observations)


def with_observations(conn: Connection, rows: Sequence[Any]) -> list[StoredResult]:
    """StoredResults for a few result rows (full ``results`` rows), with their observations."""
    pks = [r.id for r in rows]
    observations = conn.execute(select(*_OBSERVATION_COLUMNS).where(Observation.result_pk.in_(pks))
                                .order_by(Observation.result_pk, Observation.seq)).all() if pks else []
    return _assemble(rows, observations)


def _assemble(rows: Sequence[Any], observations: Sequence[Any]) -> list[StoredResult]:
    by_pk: dict[int, list[StoredObservation]] = {r.id: [] for r in rows}
    for o in observations:
        bucket = by_pk.get(o.result_pk)
        if bucket is not None:
            bucket.append(StoredObservation(*o[1:]))
    return [StoredResult(pk=r.id, issuer=r.issuer, result_id=r.result_id, version=r.version, kind=r.kind,
                         status=r.status, patient=r.patient, unified_code=r.unified_code, local_code=r.local_code,
                         collected_at=r.collected_at, reported_at=r.reported_at, event_json=r.event,
                         observations=tuple(by_pk[r.id])) for r in rows]


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

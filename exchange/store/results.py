"""Writing result events into the store, idempotently, and reading a patient's current results.

Rules implemented (docs/rules.md, "Delivery" and "Statuses and versions"):
- the natural key (issuer, result_id, version) is UNIQUE; a redelivered event inserts nothing
  (``ON CONFLICT DO NOTHING``), so at-least-once delivery from Kafka stores every result exactly once;
- a higher version (correction, amendment, cancellation) moves the head; a stale resend of a lower version
  is stored for the record but never moves the head backwards (``ON CONFLICT DO UPDATE … WHERE``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from operator import itemgetter
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, bindparam, case, exists, or_, select
from sqlalchemy.exc import DBAPIError

from exchange.store import write
from exchange.store.imaging import join_images_and_reports
from exchange.store.models import DeadLetter, Observation, Result, ResultHead
from schemas.events import parse_timestamp


@dataclass(frozen=True)
class Delivery:
    """A validated event and where it was consumed from."""

    event: dict[str, Any]
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    raw: bytes | None = None  # the event as consumed (stored as is); None: serialized from ``event``


@dataclass
class IngestReport:
    stored: int = 0
    duplicates: int = 0
    superseded: int = 0  # stored, but an equal or higher version already was the head
    dead_letters: int = 0
    #: The deliveries not stored because their version was stored already or came earlier in the batch, in
    #: delivery order: a caller that must tell resends from conflicting content compares them with the store.
    repeated: list[Delivery] = field(default_factory=list)


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


_OBSERVATION_TABLE = Observation.__table__
_RESULT_TABLE = Result.__table__
_HEAD_TABLE = ResultHead.__table__


def observation_rows(result_pk: int, event: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``observations`` rows of one stored version, as column → value mappings."""
    rows = []
    for obs in event.get("observations") or ():
        ref = obs.get("reference_range") or {}
        item = obs["item"]
        rows.append({"result_pk": result_pk, "seq": obs["seq"], "unified_code": item.get("unified_code"),
                     "local_code": item["local_code"], "local_system": item.get("local_system"),
                     "value": obs.get("value"), "value_text": obs.get("value_text"), "unit": obs.get("unit"),
                     "ref_low": ref.get("low"), "ref_high": ref.get("high"), "ref_text": ref.get("text"),
                     "interpretation": obs.get("interpretation")})
    return rows


def ingest(conn: Connection, deliveries: Iterable[Delivery]) -> IngestReport:
    """Store ``deliveries`` inside the caller's transaction; safe to call again with the same events.

    Same outcome and counts as storing the deliveries one after the other, in order. Two set-based paths:

    - *append* (the steady state): every version in the batch is new and no result has two versions in it. The
      rows are bulk-loaded without conflict handling (``COPY`` on PostgreSQL), inside a savepoint; the first
      version that is already stored (a redelivery) raises a unique violation, the savepoint is rolled back and
      the batch takes the other path. Heads are upserted in one statement either way.
    - *merge*: ``INSERT … ON CONFLICT DO NOTHING RETURNING`` for the versions, an insert of their observations
      and a monotonic upsert of the heads, in delivery order where a result repeats.
    """
    report = IngestReport()
    batch = _Batch.of(deliveries, report)
    join_images_and_reports(conn, batch.rows, batch.events)
    if not batch.rows:
        return report
    if not batch.repeats_a_result and _append(conn, batch, report):
        return report
    _merge(conn, batch, report)
    return report


@dataclass
class _Batch:
    """The distinct versions of one batch as ``results`` rows (``id`` still None), with their events."""

    rows: list[dict[str, Any]]
    events: list[dict[str, Any]]
    deliveries: list[Delivery]
    repeats_a_result: bool  # some result has two versions in the batch: their head moves must go in order

    @classmethod
    def of(cls, deliveries: Iterable[Delivery], report: IngestReport) -> _Batch:
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        kept: list[Delivery] = []
        seen: set[tuple[str, str, int]] = set()
        results: set[tuple[str, str]] = set()
        for delivery in deliveries:
            event = delivery.event
            key = (event["issuer"], event["result_id"], event["version"])
            if key in seen:  # the same version twice in one batch: the second one is a redelivery
                report.duplicates += 1
                report.repeated.append(delivery)
                continue
            seen.add(key)
            results.add(key[:2])
            item = event["item"]
            collected = event.get("collected_at")
            rows.append({
                "id": None, "issuer": key[0], "result_id": key[1], "version": key[2],
                "kind": "lab" if event["schema"] == "hr.lab-result.v1" else "imaging", "status": event["status"],
                "patient": event["patient"]["pseudonym"], "unified_code": item.get("unified_code"),
                "local_code": item["local_code"], "mapping_version": item.get("mapping_version"),
                "collected_at": parse_timestamp(collected) if collected else None,
                "reported_at": parse_timestamp(event["reported_at"]), "stored_at": now,
                "event": delivery.raw.decode() if delivery.raw is not None else orjson.dumps(event).decode(),
                "source_topic": delivery.topic, "source_partition": delivery.partition,
                "source_offset": delivery.offset})
            events.append(event)
            kept.append(delivery)
        return cls(rows, events, kept, len(results) < len(rows))


def _append(conn: Connection, batch: _Batch, report: IngestReport) -> bool:
    """Bulk-load a batch of new versions; False (and nothing written) if the load refused any row."""
    postgres = conn.dialect.name == "postgresql"
    n = len(batch.rows)
    if not postgres and not conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        # pysqlite opens no transaction for a SAVEPOINT, which would then be the outermost one (its release
        # commits); and taking the write lock now makes the ids below ours alone.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        with conn.begin_nested():
            if postgres:
                ids = conn.exec_driver_sql(
                    "SELECT array_agg(nextval(pg_get_serial_sequence('results', 'id'))) "
                    "FROM generate_series(1, %s)", (n,)).scalar_one()
            else:
                first = conn.exec_driver_sql("SELECT coalesce(max(id), 0) + 1 FROM results").scalar_one()
                ids = range(first, first + n)
            observations = []
            for pk, row, event in zip(ids, batch.rows, batch.events):
                row["id"] = pk
                observations += observation_rows(pk, event)
            write.load(conn, _RESULT_TABLE, batch.rows, with_id=True)
            write.load(conn, _OBSERVATION_TABLE, observations)
    except DBAPIError:
        # A version already stored (a redelivery) or anything else the bulk load refused: the savepoint is
        # rolled back, and the merge path redoes the batch and reports real errors.
        return False
    # The heads come from the rows just written (their pages are still cached) in one statement: no Python
    # object per head and no second conversion of its report time. On SQLite the ids are a range, ours alone
    # under BEGIN IMMEDIATE; PostgreSQL's come from the sequence, interleaved with other engines' when several run.
    if postgres:
        moved = conn.exec_driver_sql(_HEADS_OF_IDS_PG, (ids,)).rowcount
    else:
        moved = conn.exec_driver_sql(_HEADS_OF_IDS_SQLITE, (ids[0], ids[-1])).rowcount
    report.stored += n
    report.superseded += n - moved
    return True


#: Each head column is the ``results`` column of the same name, or the one it references (``result_pk``: the id).
_HEAD_SOURCES = {column.name: next((fk.column.name for fk in column.foreign_keys), column.name)
                 for column in _HEAD_TABLE.columns}
_HEAD_KEY = tuple(column.name for column in _HEAD_TABLE.primary_key.columns)

#: Every statement that moves heads ends in this clause: a head moves only to a higher version (an upsert whose
#: WHERE is false changes nothing, so a driver's count of changed rows is the number of heads moved).
_FORWARD_ONLY = (f"ON CONFLICT ({', '.join(_HEAD_KEY)}) DO UPDATE SET "
                 + ", ".join(f"{name} = excluded.{name}" for name in _HEAD_SOURCES if name not in _HEAD_KEY)
                 + f" WHERE {_HEAD_TABLE.name}.version < excluded.version")

#: In key order: the heads' primary-key b-tree is walked once, and concurrent engines lock heads in one order.
_HEADS_OF_IDS = (f"INSERT INTO {_HEAD_TABLE.name} ({', '.join(_HEAD_SOURCES)}) "
                 f"SELECT {', '.join(_HEAD_SOURCES.values())} FROM {_RESULT_TABLE.name} WHERE {{ids}} "
                 f"ORDER BY {', '.join(_HEAD_KEY)} " + _FORWARD_ONLY)
_HEADS_OF_IDS_SQLITE = _HEADS_OF_IDS.format(ids="id BETWEEN ? AND ?")
_HEADS_OF_IDS_PG = _HEADS_OF_IDS.format(ids="id = ANY(%s)")


def _merge(conn: Connection, batch: _Batch, report: IngestReport) -> None:
    """The general path: conflict-tolerant inserts, heads moved in delivery order where a result repeats."""
    found = write.insert_returning(conn, _RESULT_TABLE, batch.rows, ("id", "issuer", "result_id", "version"),
                                   on_conflict=write.DO_NOTHING)
    inserted = {(issuer, result_id, version): pk for pk, issuer, result_id, version in found}
    observations: list[dict[str, Any]] = []
    heads: list[dict[str, Any]] = []
    for row, event, delivery in zip(batch.rows, batch.events, batch.deliveries):
        pk = inserted.get((row["issuer"], row["result_id"], row["version"]))
        if pk is None:
            report.duplicates += 1
            report.repeated.append(delivery)
            continue
        report.stored += 1
        observations += observation_rows(pk, event)
        heads.append({name: pk if source == "id" else row[source] for name, source in _HEAD_SOURCES.items()})
    write.insert(conn, _OBSERVATION_TABLE, observations)
    # A statement moves a head at most once: the n-th new version of a result in the batch goes in the n-th
    # statement, so several versions of one result move its head in delivery order. Each statement is in key
    # order (the sort is stable): concurrent engine consumers lock heads in one order.
    heads.sort(key=itemgetter(*_HEAD_KEY))
    rounds: list[list[dict[str, Any]]] = []
    seen: dict[tuple[Any, ...], int] = {}
    for head in heads:
        key = tuple(head[name] for name in _HEAD_KEY)
        n = seen[key] = seen.get(key, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(head)
    for moving in rounds:
        report.superseded += len(moving) - write.insert(conn, _HEAD_TABLE, moving, on_conflict=_FORWARD_ONLY)


def record_dead_letter(conn: Connection, topic: str, partition: int, offset: int, error: str,
                       payload: str | None) -> bool:
    """Keep a dead letter once per origin; returns False when it was already recorded."""
    return write.insert(conn, DeadLetter.__table__, [{
        "topic": topic, "partition": partition, "offset": offset, "error": error, "payload": payload,
        "failed_at": datetime.now(UTC)}], on_conflict=write.DO_NOTHING) == 1


def _read_into(name: str) -> Any:
    """The column a patient's read puts into StoredResult's field ``name``: the ``results`` column of that name."""
    if name == "pk":
        return Result.id
    if name == "event_json":
        # The stored event is only needed for imaging results (report text, study, retrieval pointer): a lab
        # result's values are in ``observations``, and shipping every lab event's JSON would triple the read.
        return case((Result.kind == "imaging", Result.event), else_=None).label("event")
    return _RESULT_TABLE.c[name]


# Reads give StoredResult's and StoredObservation's fields in their order, so a row is split by positions found
# here once, by name.
_STORED_RESULT_FIELDS = tuple(f.name for f in fields(StoredResult) if f.name != "observations")
_OBSERVATION_COLUMNS = tuple(_OBSERVATION_TABLE.c[name] for name in StoredObservation._fields)
# The patient is the query's own argument: not shipped back with each of its rows.
_PATIENT_AT = _STORED_RESULT_FIELDS.index("patient")
_CURRENT_FIELDS = tuple(name for name in _STORED_RESULT_FIELDS if name != "patient")
_CURRENT_COLUMNS = tuple(_read_into(name) for name in _CURRENT_FIELDS)
_PK_AT = _CURRENT_FIELDS.index("pk")
_SEQ_AT = len(_CURRENT_FIELDS) + StoredObservation._fields.index("seq")
_CURRENT_RESULTS = (select(*_CURRENT_COLUMNS, *_OBSERVATION_COLUMNS)
                    .join(ResultHead, ResultHead.result_pk == Result.id)
                    .outerjoin(Observation, Observation.result_pk == Result.id)
                    .where(ResultHead.patient == bindparam("patient"))
                    .order_by(ResultHead.reported_at.desc(), Result.id.desc(), Observation.seq))
_compiled_for: dict[str, tuple[str, dict[str, Any]]] = {}


def _patient_rows(conn: Connection, patient: str) -> Sequence[Sequence[Any]]:
    if conn.dialect.name != "postgresql":
        return conn.execute(_CURRENT_RESULTS, {"patient": patient}).all()
    # On PostgreSQL the rows are fetched by psycopg itself, in binary, inside the same transaction: no column
    # here needs a Python-side conversion (sessions run in UTC, see exchange.store.db.connect), and
    # SQLAlchemy's per-row result processing cost a third of this read (bench recognition).
    found = _compiled_for.get(conn.dialect.name)
    if found is None:
        compiled = _CURRENT_RESULTS.compile(dialect=conn.dialect)
        found = _compiled_for[conn.dialect.name] = (str(compiled), dict(compiled.params))
    sql, params = found
    with conn.connection.driver_connection.cursor(binary=True) as cursor:  # type: ignore[union-attr]
        return cursor.execute(sql, {**params, "patient": patient}).fetchall()


def current_results(conn: Connection, patient: str) -> list[StoredResult]:
    """The head version of every result of ``patient``, newest first, with observations.

    One indexed query by patient (results through their heads, each joined to its observations), so the cost
    grows with the patient's history, not with the size of the store, and a check pays one round trip.
    """
    results: list[StoredResult] = []
    width = len(_CURRENT_COLUMNS)  # StoredResult's fields, in order, without the patient
    last = None
    observations: list[StoredObservation] = []
    for row in _patient_rows(conn, patient):
        if row[_PK_AT] != last:
            if last is not None:
                results[-1].observations = tuple(observations)
            last, observations = row[_PK_AT], []
            results.append(StoredResult(*row[:_PATIENT_AT], patient, *row[_PATIENT_AT:width]))
        if row[_SEQ_AT] is not None:  # no seq: a result without observations (imaging without a coded finding)
            observations.append(StoredObservation(*row[width:]))
    if results:
        results[-1].observations = tuple(observations)
    return results


def with_observations(conn: Connection, rows: Sequence[Any]) -> list[StoredResult]:
    """StoredResults for a few result rows (full ``results`` rows), with their observations."""
    pks = [r.id for r in rows]
    observations = conn.execute(select(Observation.result_pk, *_OBSERVATION_COLUMNS)
                                .where(Observation.result_pk.in_(pks))
                                .order_by(Observation.result_pk, Observation.seq)).all() if pks else []
    return _assemble(rows, observations)


def _assemble(rows: Sequence[Any], observations: Sequence[Any]) -> list[StoredResult]:
    by_pk: dict[int, list[StoredObservation]] = {r.id: [] for r in rows}
    for o in observations:
        bucket = by_pk.get(o.result_pk)
        if bucket is not None:
            bucket.append(StoredObservation._make(o._mapping[name] for name in StoredObservation._fields))
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
    reason: str | None = None  # the item's mapping_issue_code; None in events stored before reasons existed


def unmapped_codes(conn: Connection, issuer: str | None = None) -> list[UnmappedCode]:
    """Codes without a unified code in the current versions of stored results (observations, imaging items and
    lab reports' own items), per issuer, code and reason, with how many results carry them, most frequent
    first. The reason is read from the stored event: it is not a column."""
    unmapped_value = exists().where(Observation.result_pk == Result.id, Observation.unified_code.is_(None))
    query = (select(Result.id, Result.issuer, Result.event)
             .join(ResultHead, ResultHead.result_pk == Result.id)
             .where(or_(Result.unified_code.is_(None), unmapped_value)))
    if issuer is not None:
        query = query.where(Result.issuer == issuer)
    carriers: dict[tuple[str, str, str | None, str | None], set[int]] = {}
    for pk, who, raw in conn.execute(query):
        event = orjson.loads(raw)
        for item in [event["item"], *(o["item"] for o in event.get("observations") or ())]:
            if item.get("unified_code") is None:
                key = (who, item["local_code"], item.get("local_system"), item.get("mapping_issue_code"))
                carriers.setdefault(key, set()).add(pk)
    rows = [UnmappedCode(who, code, system, len(pks), reason) for (who, code, system, reason), pks in carriers.items()]
    return sorted(rows, key=lambda u: (-u.results, u.issuer, u.local_code, u.reason or ""))

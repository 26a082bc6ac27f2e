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
from sqlalchemy import Connection, bindparam, case, exists, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from schemas.events import parse_timestamp
from exchange.store.models import DeadLetter, Observation, Result, ResultHead


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


_OBSERVATION_FIELDS = ("result_pk", "seq", "unified_code", "local_code", "local_system", "value", "value_text",
                       "unit", "ref_low", "ref_high", "ref_text", "interpretation")


def observation_values(result_pk: int, event: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The ``observations`` rows of one stored version, as tuples in ``_OBSERVATION_FIELDS`` order."""
    rows = []
    for obs in event.get("observations") or ():
        ref = obs.get("reference_range") or {}
        item = obs["item"]
        rows.append((result_pk, obs["seq"], item.get("unified_code"), item["local_code"], item.get("local_system"),
                     obs.get("value"), obs.get("value_text"), obs.get("unit"), ref.get("low"), ref.get("high"),
                     ref.get("text"), obs.get("interpretation")))
    return rows


def observation_rows(result_pk: int, event: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``observations`` rows of one stored version, as column → value mappings."""
    return [dict(zip(_OBSERVATION_FIELDS, row)) for row in observation_values(result_pk, event)]


def ingest(conn: Connection, deliveries: Iterable[Delivery]) -> IngestReport:
    """Store ``deliveries`` inside the caller's transaction; safe to call again with the same events.

    Same outcome and counts as storing the deliveries one after the other, in order. Two set-based paths:

    - *append* (the steady state): every version in the batch is new and no result has two versions in it. The
      rows are bulk-loaded without conflict handling (``COPY`` on PostgreSQL), inside a savepoint; the first
      version that is already stored (a redelivery) raises a unique violation, the savepoint is rolled back and
      the batch takes the other path. Heads are upserted in one statement either way.
    - *merge*: one multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING`` for the versions, one bulk insert
      for their observations and a monotonic upsert for the heads.
    """
    report = IngestReport()
    batch = _Batch.of(deliveries, report)
    if not batch.rows:
        return report
    if not batch.repeats_a_result and _append(conn, batch, report):
        return report
    _merge(conn, batch, report)
    return report


#: ``results`` columns in the order of :attr:`_Batch.rows` (``id`` first, filled in once it is known).
_RESULT_FIELDS = ("id", "issuer", "result_id", "version", "kind", "status", "patient", "unified_code", "local_code",
                  "mapping_version", "collected_at", "reported_at", "stored_at", "event", "source_topic",
                  "source_partition", "source_offset")
_COLLECTED_AT, _STORED_AT = _RESULT_FIELDS.index("collected_at"), _RESULT_FIELDS.index("stored_at")
assert _RESULT_FIELDS[_COLLECTED_AT:_STORED_AT + 1] == ("collected_at", "reported_at", "stored_at")  # _sqlite_rows


@dataclass
class _Batch:
    """The distinct versions of one batch as ``results`` rows (tuples, ``id`` still None), with their events."""

    rows: list[tuple[Any, ...]]
    events: list[dict[str, Any]]
    repeats_a_result: bool  # some result has two versions in the batch: their head moves must go in order

    @classmethod
    def of(cls, deliveries: Iterable[Delivery], report: IngestReport) -> _Batch:
        now = datetime.now(UTC)
        rows: list[tuple[Any, ...]] = []
        events: list[dict[str, Any]] = []
        seen: set[tuple[str, str, int]] = set()
        results: set[tuple[str, str]] = set()
        for delivery in deliveries:
            event = delivery.event
            key = (event["issuer"], event["result_id"], event["version"])
            if key in seen:  # the same version twice in one batch: the second one is a redelivery
                report.duplicates += 1
                continue
            seen.add(key)
            results.add(key[:2])
            item = event["item"]
            collected = event.get("collected_at")
            rows.append((
                None, key[0], key[1], key[2], "lab" if event["schema"] == "hr.lab-result.v1" else "imaging",
                event["status"], event["patient"]["pseudonym"], item.get("unified_code"), item["local_code"],
                item.get("mapping_version"), parse_timestamp(collected) if collected else None,
                parse_timestamp(event["reported_at"]), now,
                delivery.raw.decode() if delivery.raw is not None else orjson.dumps(event).decode(),
                delivery.topic, delivery.partition, delivery.offset))
            events.append(event)
        return cls(rows, events, len(results) < len(rows))


def _append(conn: Connection, batch: _Batch, report: IngestReport) -> bool:
    """Bulk-load a batch of new versions; False (and nothing written) if the load refused any row."""
    postgres = conn.dialect.name == "postgresql"
    raw = conn.connection.driver_connection
    n = len(batch.rows)
    if not postgres and not raw.in_transaction:  # type: ignore[union-attr]
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
            results = ([(pk, *row[1:]) for pk, row in zip(ids, batch.rows)] if postgres
                       else _sqlite_rows(ids, batch.rows))
            observations = [o for pk, event in zip(ids, batch.events) for o in observation_values(pk, event)]
            cur = raw.cursor()  # type: ignore[union-attr]
            try:
                if postgres:
                    _copy(cur, "results", _RESULT_FIELDS, results)
                    _copy(cur, "observations", _OBSERVATION_FIELDS, observations)
                else:
                    cur.executemany(_sqlite_insert("results", _RESULT_FIELDS), results)
                    cur.executemany(_sqlite_insert("observations", _OBSERVATION_FIELDS), observations)
            finally:
                cur.close()
    except conn.dialect.loaded_dbapi.Error:
        # Only the driver-level bulk load raises unwrapped driver errors: a version already stored (a
        # redelivery) or anything else it refused. The savepoint is rolled back; the merge path redoes the
        # batch and reports real errors as the rest of the store does.
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


#: Every statement that moves heads inserts through these two parts: a head moves only to a higher version (an
#: upsert whose WHERE is false changes nothing, so a driver's count of changed rows is the number of heads moved).
_INTO_HEADS = "INSERT INTO result_heads AS h (issuer, result_id, version, result_pk, patient, reported_at) "
_FORWARD_ONLY = ("ON CONFLICT (issuer, result_id) DO UPDATE SET version = excluded.version, "
                 "result_pk = excluded.result_pk, patient = excluded.patient, reported_at = excluded.reported_at "
                 "WHERE h.version < excluded.version")

#: In key order: the heads' primary-key b-tree is walked once, and concurrent engines lock heads in one order.
_HEADS_OF_IDS = (_INTO_HEADS + "SELECT issuer, result_id, version, id, patient, reported_at FROM results "
                 "WHERE {ids} ORDER BY issuer, result_id " + _FORWARD_ONLY)
_HEADS_OF_IDS_SQLITE = _HEADS_OF_IDS.format(ids="id BETWEEN ? AND ?")
_HEADS_OF_IDS_PG = _HEADS_OF_IDS.format(ids="id = ANY(%s)")


def _copy(cur: Any, table: str, fields: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    with cur.copy(f"COPY {table} ({', '.join(fields)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _sqlite_insert(table: str, fields: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})"


def sqlite_time(moment: datetime | None) -> str | None:
    """A datetime as the store's columns hold it on SQLite: UTC, ``YYYY-MM-DD HH:MM:SS.ffffff`` (SQLAlchemy's
    SQLite DATETIME format; a test compares the two). Used where rows go to the driver directly: one C call
    instead of SQLAlchemy's two Python-level processors (≈ 25 µs per lab event)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]  # without its "+00:00"


def _sqlite_rows(ids: Iterable[int], rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``results`` rows for SQLite's driver: ids filled in, times as text; ``stored_at`` is one moment per batch."""
    stored_at = sqlite_time(rows[0][_STORED_AT]) if rows else None
    return [(pk, *row[1:_COLLECTED_AT], sqlite_time(row[_COLLECTED_AT]), sqlite_time(row[_COLLECTED_AT + 1]),
             stored_at, *row[_STORED_AT + 1:]) for pk, row in zip(ids, rows)]


def _move_heads(conn: Connection, heads: list[dict[str, Any]]) -> int:
    """Upsert one head per result (at most one version per result here); returns how many moved."""
    if not heads:
        return 0
    if conn.dialect.name == "postgresql":
        # The batch travels as one JSON document unpacked by json_to_recordset(): one short statement, one C
        # serialization (orjson) instead of a Python adapter call per value; PostgreSQL parses it.
        return len(conn.exec_driver_sql(
            _INTO_HEADS + "SELECT * FROM json_to_recordset(%s::json) AS x(issuer varchar, result_id varchar, "
            "version int, result_pk bigint, patient varchar, reported_at timestamptz) " + _FORWARD_ONLY
            + " RETURNING h.version", (orjson.dumps(heads).decode(),)).all())
    # Positional rows straight to the driver's executemany: its summed row count is the number of heads moved
    # (see _FORWARD_ONLY), and no RETURNING row has to be built per head.
    return conn.exec_driver_sql(
        _INTO_HEADS + "VALUES (?, ?, ?, ?, ?, ?) " + _FORWARD_ONLY,
        [(h["issuer"], h["result_id"], h["version"], h["result_pk"], h["patient"],
          sqlite_time(h["reported_at"])) for h in heads]).rowcount


def _head_upsert(conn: Connection) -> Any:
    heads = ResultHead.__table__
    head = _insert(conn, heads)
    return head.on_conflict_do_update(
        index_elements=["issuer", "result_id"],
        set_={"version": head.excluded.version, "result_pk": head.excluded.result_pk,
              "patient": head.excluded.patient, "reported_at": head.excluded.reported_at},
        where=heads.c.version < head.excluded.version,
    ).returning(heads.c.version)


def _merge(conn: Connection, batch: _Batch, report: IngestReport) -> None:
    """The general path: conflict-tolerant inserts, heads moved in delivery order where a result repeats."""
    rows = [dict(zip(_RESULT_FIELDS[1:], row[1:])) for row in batch.rows]
    events = batch.events
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        # See _move_heads for why the rows travel as one JSON document.
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
        results = Result.__table__
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
        conn.execute(Observation.__table__.insert(), obs_rows)
    # One row per result in a bulk statement, in key order (a stable lock order between engine consumers);
    # several new versions of one result in the same batch go one by one, in delivery order.
    single = [versions[0] for key, versions in sorted(new_heads.items()) if len(versions) == 1]
    report.superseded += len(single) - _move_heads(conn, single)
    upsert = _head_upsert(conn)
    for versions in new_heads.values():
        if len(versions) > 1:
            for version in versions:
                if conn.execute(upsert.values(version)).scalar_one_or_none() is None:
                    report.superseded += 1


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
_OBSERVATION_COLUMNS = tuple(Observation.__table__.c[name] for name in _OBSERVATION_FIELDS)


# The patient is the query's own argument: not shipped back with each of its rows.
_PATIENT_AT = next(i for i, column in enumerate(_RESULT_COLUMNS) if column is Result.patient)
_CURRENT_COLUMNS = _RESULT_COLUMNS[:_PATIENT_AT] + _RESULT_COLUMNS[_PATIENT_AT + 1:]
_CURRENT_RESULTS = (select(*_CURRENT_COLUMNS, *_OBSERVATION_COLUMNS[1:])
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
    # SQLAlchemy's per-row result processing cost a third of this read (measured at 500 results: ≈ 8.5 → 5 ms).
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
        if row[0] != last:
            if last is not None:
                results[-1].observations = tuple(observations)
            last, observations = row[0], []
            results.append(StoredResult(*row[:_PATIENT_AT], patient, *row[_PATIENT_AT:width]))
        if row[width] is not None:  # no seq: a result without observations (imaging without a coded finding)
            observations.append(StoredObservation(*row[width:]))
    if results:
        results[-1].observations = tuple(observations)
    return results


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

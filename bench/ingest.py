"""1. Engine ingest, Kafka → store, on PostgreSQL and SQLite, against a bare baseline on the same events.

Baseline, per backend, in the same run and on the same topic: a bare kafka-python consume loop (same
``max_poll_records``), ``orjson.loads`` only, a bare bulk insert of the same rows into the same migrated schema
(``COPY`` into results and observations on PostgreSQL; ``executemany`` INSERT on SQLite), then the SQL commit
and the Kafka offset commit — the same at-least-once contract, without validation, idempotency or heads.
Ours: the real :class:`exchange.engine.ResultEngine` in a thread (validation, ON CONFLICT idempotent ingest,
monotonic heads). Both are timed from the first polled batch to the SQL commit of the last event.
"""
from __future__ import annotations

import gc
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.common import Outcome, fresh_pg, ratio, say
from bench.data import OBS_COLUMNS, RESULT_COLUMNS, lab_event

MAX_POLL = 1000


def produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> float:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024,
                             max_request_size=8 * 1024 * 1024, enable_idempotence=False)
    started = time.perf_counter()
    futures = [producer.send(topic, key=e["patient"]["pseudonym"].encode(), value=orjson.dumps(e)) for e in events]
    producer.flush()
    for f in futures[-10:]:
        f.get(timeout=30)
    took = time.perf_counter() - started
    producer.close()
    return took


def _rows(records: list[Any], next_id: int) -> tuple[list[tuple], list[tuple]]:
    rows, obs = [], []
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    for k, record in enumerate(records):
        e = orjson.loads(record.value)
        pk = next_id + k
        rows.append((pk, e["issuer"], e["result_id"], e["version"], "lab", e["status"], e["patient"]["pseudonym"],
                     e["item"]["unified_code"], e["item"]["local_code"], e["item"].get("mapping_version"),
                     e.get("collected_at"), e["reported_at"], now, record.value.decode(), record.topic,
                     record.partition, record.offset))
        for o in e["observations"]:
            ref = o.get("reference_range") or {}
            obs.append((pk, o["seq"], o["item"].get("unified_code"), o["item"]["local_code"],
                        o["item"].get("local_system"), o.get("value"), o.get("value_text"), o.get("unit"),
                        ref.get("low"), ref.get("high"), ref.get("text"), o.get("interpretation")))
    return rows, obs


def baseline(bootstrap: str, topic: str, url: str, n: int) -> float:
    """The bare loop; returns seconds from the first polled batch to the commit of the n-th row."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-base-{uuid.uuid4().hex[:8]}",
                             enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=MAX_POLL,
                             session_timeout_ms=6000, heartbeat_interval_ms=1500)
    if url.startswith("postgresql"):
        import psycopg

        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))

        def write(records: list[Any]) -> None:
            with conn.cursor() as cur:
                cur.execute("SELECT nextval('results_id_seq') FROM generate_series(1, %s)", (1,))
                first = cur.fetchone()[0]
                cur.execute("SELECT setval('results_id_seq', %s)", (first + len(records),))
                rows, obs = _rows(records, first)
                with cur.copy(f"COPY results ({', '.join(RESULT_COLUMNS)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                with cur.copy(f"COPY observations ({', '.join(OBS_COLUMNS)}) FROM STDIN") as copy:
                    for row in obs:
                        copy.write_row(row)
            conn.commit()
    else:
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        counter = [1]
        insert_results = f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) VALUES ({', '.join('?' * len(RESULT_COLUMNS))})"
        insert_obs = f"INSERT INTO observations ({', '.join(OBS_COLUMNS)}) VALUES ({', '.join('?' * len(OBS_COLUMNS))})"

        def write(records: list[Any]) -> None:
            rows, obs = _rows(records, counter[0])
            counter[0] += len(records)
            conn.execute("BEGIN")
            conn.executemany(insert_results, rows)
            conn.executemany(insert_obs, obs)
            conn.execute("COMMIT")
    done, started = 0, None
    try:
        while done < n:
            batch = consumer.poll(timeout_ms=500)
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            records = [r for rs in batch.values() for r in rs]
            write(records)
            consumer.commit()
            done += len(records)
        return time.perf_counter() - started  # type: ignore[operator]
    finally:
        consumer.close(autocommit=False)
        conn.close()


def ours(bootstrap: str, url: str, n: int, topics: tuple[str, ...]) -> tuple[float, dict[str, Any]]:
    """The real engine in a thread; returns seconds from its first batch to the SQL commit of the n-th event."""
    from exchange.engine import ResultEngine
    from adapters.publish import Publisher
    from exchange.store import connect

    marks: dict[str, float] = {}

    class TimedEngine(ResultEngine):
        # On PostgreSQL the engine validates batch N+1 while batch N is written (on SQLite one after the
        # other): time each stage, and the whole from the first polled batch to the commit of the n-th event.
        def prepare(self, batch):  # type: ignore[no-untyped-def]
            began = time.perf_counter()
            marks.setdefault("first", began)
            prepared = super().prepare(batch)
            marks["prepare"] = marks.get("prepare", 0.0) + time.perf_counter() - began
            return prepared

        def store(self, prepared):  # type: ignore[no-untyped-def]
            began = time.perf_counter()
            offsets = super().store(prepared)
            marks["store"] = marks.get("store", 0.0) + time.perf_counter() - began
            if self.stats.stored + self.stats.duplicates + self.stats.dead_letters >= n:
                marks.setdefault("last", time.perf_counter())
            return offsets

    database = connect(url)
    publisher = Publisher(bootstrap)
    engine = TimedEngine(bootstrap, database, f"bench-engine-{uuid.uuid4().hex[:8]}", publisher, topics=topics,
                         max_poll_records=MAX_POLL, session_timeout_ms=6000)
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 600
    while "last" not in marks and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    publisher.close()
    database.dispose()
    if "last" not in marks:
        raise RuntimeError(f"engine did not store {n} events: {engine.stats}")
    return marks["last"] - marks["first"], {"stored": engine.stats.stored, "duplicates": engine.stats.duplicates,
                                            "dead_letters": engine.stats.dead_letters, "batches": engine.stats.batches,
                                            "seconds_validating": round(marks.get("prepare", 0.0), 2),
                                            "seconds_writing": round(marks.get("store", 0.0), 2)}


def run(quick: bool = False, n: int | None = None, workdir: Path | None = None) -> Outcome:
    import tempfile

    from exchange.broker import EmbeddedBroker, ensure_topics
    from schemas.topics import DEFAULT_PARTITIONS, TOPIC_LAB
    from exchange.store import connect, migrate

    n = n or (20_000 if quick else 100_000)
    out = Outcome("ingest", "Engine ingest Kafka → store (results/s)")
    rng = random.Random(61)
    events = [lab_event(i, rng) for i in range(n)]
    observations = sum(len(e["observations"]) for e in events)
    avg_bytes = sum(len(orjson.dumps(e)) for e in events[:1000]) / min(n, 1000)
    out.sizes = {"events": n, "observations": observations, "avg_event_bytes": round(avg_bytes),
                 "partitions": DEFAULT_PARTITIONS[TOPIC_LAB], "max_poll_records": MAX_POLL}
    tmp = Path(workdir or tempfile.mkdtemp(prefix="hrx-bench-ingest-"))
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, DEFAULT_PARTITIONS)
        produced = produce(broker.bootstrap, TOPIC_LAB, events)
        out.figures["produce_s"] = round(produced, 2)
        say(f"ingest: produced {n} lab events ({avg_bytes:.0f} B each) in {produced:.1f}s")
        del events[:]  # the engine's process would not hold them: keep them out of the garbage collector's way
        gc.collect()
        for backend in ("postgresql", "sqlite"):
            rates = {}
            for who in ("baseline", "engine"):
                def target(db_url: str) -> float:
                    database = connect(db_url)
                    migrate(database)
                    database.dispose()
                    if who == "baseline":
                        return baseline(broker.bootstrap, TOPIC_LAB, db_url, n)
                    seconds, stats = ours(broker.bootstrap, db_url, n, (TOPIC_LAB,))
                    out.figures[f"{backend}_engine_stats"] = stats
                    say(f"ingest: {backend} engine {stats}")
                    return seconds
                if backend == "postgresql":
                    with fresh_pg(f"hrx_bench_ingest_{who}") as db_url:
                        seconds = target(db_url)
                else:
                    path = tmp / f"{who}.db"
                    for suffix in ("", "-wal", "-shm"):
                        Path(str(path) + suffix).unlink(missing_ok=True)
                    seconds = target(f"sqlite:///{path}")
                rates[who] = n / seconds
                out.figures[f"{backend}_{who}_results_per_s"] = round(rates[who])
                out.figures[f"{backend}_{who}_seconds"] = round(seconds, 2)
                say(f"ingest: {backend:10s} {who:8s} {n} results in {seconds:6.2f}s = {rates[who]:8.0f} results/s")
            r = ratio(rates["engine"], rates["baseline"])
            out.ratios[f"{backend}_engine_vs_baseline"] = r
            out.goals[f"{backend}_ratio_ge_0.5"] = r is not None and r >= 0.5
            out.goals[f"{backend}_ge_5000_per_s"] = rates["engine"] >= 5000
            say(f"ingest: {backend} engine/baseline = {r}  (goal ≥ 0.5× and ≥ 5,000/s: "
                f"{'met' if r and r >= 0.5 and rates['engine'] >= 5000 else 'NOT met'})")
    out.notes.append("baseline = bare kafka-python poll + orjson + COPY (PostgreSQL) / executemany (SQLite) "
                     "into results+observations, SQL commit then offset commit per poll batch")
    return out


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv).as_dict())

"""9. Scale-out: results stored per second by 1, 2 and 3 ``hrx engine`` processes in one consumer group, and the
pause a rebalance costs (an engine joining; an engine killed).

The deployment's shape (chaos/scale_out.py, docker/compose.yaml) on this machine: ``hrx migrate --topics`` with
12 partitions per results topic, the engines as child processes, PostgreSQL, the embedded broker.

- Throughput: ``events`` lab events keyed by patient are in the topic before the engines start; for each engine
  count, a fresh store and a fresh group. Measured once every engine of the group has logged its share of the
  partitions (exchange.engine logs each rebalance): rows stored from then until the last one, per second of
  that window. The baseline is one engine in the same run: ``N_vs_1`` is the scaling factor.
- Rebalance pause: two engines keep up with a steady stream (``STREAM_RATE``/s); a third joins, then one is
  killed with SIGKILL. For each, the longest time the store received no row (the group's stop-the-world
  rebalance), and the time until the group's lag is back under half a second of stream.
"""
from __future__ import annotations

import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Outcome, fresh_pg, ratio, say

PARTITIONS = 12
STREAM_RATE = 400.0
WINDOW_S = 25.0


def _assigned(log: Path) -> list[set[tuple[str, int]]]:
    """Every assignment the engine logged, in order, as (topic, partition) pairs."""
    lines = re.findall(r"engine: rebalance: \d+ partition\(s\) assigned: (.*)$", log.read_text(errors="replace"),
                       re.MULTILINE)
    return [{(topic, int(p)) for topic, parts in re.findall(r"(\S+) \[([\d, ]*)\]", line)
             for p in parts.split(",") if p.strip()} for line in lines]


def _stable(logs: list[Path], partitions: set[tuple[str, int]]) -> bool:
    """Every engine holds a share, and the shares split the partitions exactly (the group has settled)."""
    latest = [(_assigned(log) or [set()])[-1] for log in logs]
    held = [tp for share in latest for tp in share]
    return all(latest) and len(held) == len(set(held)) == len(partitions) and set(held) == partitions


def _count(database: Any) -> int:
    from sqlalchemy import func, select

    from exchange.store.models import Result

    with database.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Result)).scalar_one())


def _throughput(bootstrap: str, engines: int, events: int, root: Path) -> dict[str, Any]:
    from chaos.processes import exchange_env, spawn, wait_until
    from chaos.scale_out import run_step, topic_partitions
    from exchange.store import connect
    from schemas.topics import RESULT_TOPICS

    partitions = {(topic, p) for topic in RESULT_TOPICS for p in range(PARTITIONS)}
    with fresh_pg(f"hrx_bench_scale_{engines}") as url:
        env = exchange_env(bootstrap=bootstrap, var_dir=root, database_url=url, group=f"bench-scale-{engines}",
                           HRX_TOPIC_PARTITIONS=topic_partitions())
        run_step(f"migrate-{engines}", ["migrate"], env, root)
        database = connect(url)
        children = [spawn(f"engines{engines}-{k}", ["engine"], env, root) for k in range(engines)]
        try:
            started = time.monotonic()
            if not wait_until(lambda: _stable([c.log_path for c in children], partitions), 120, 0.1):
                raise RuntimeError(f"{engines} engine(s): the group did not settle within 120 s")
            settled, at_settle = time.monotonic(), _count(database)
            if not wait_until(lambda: _count(database) >= events, 600, 0.05):
                raise RuntimeError(f"{engines} engine(s): {_count(database)} of {events} stored within 600 s")
            done = time.monotonic()
        finally:
            for child in children:
                child.stop()
            database.dispose()
    window = events - at_settle
    rate = window / (done - settled) if done > settled else 0.0
    say(f"scale_out: {engines} engine(s): group settled {settled - started:.1f} s after start ({at_settle} rows "
        f"by then); {window} rows in {done - settled:.1f} s = {rate:,.0f}/s")
    return {"results_per_s": round(rate), "rows_measured": window, "seconds": round(done - settled, 2),
            "settle_s": round(settled - started, 1), "rows_before_settled": at_settle}


def _longest_gap(samples: list[tuple[float, int]], since: float) -> float:
    """The longest time, after ``since``, the stored count did not change."""
    longest, last_change, last = 0.0, since, None
    for at, count in samples:
        if at < since:
            last = count
            continue
        if count != last:
            longest = max(longest, at - last_change)
            last_change, last = at, count
    return round(max(longest, samples[-1][0] - last_change if samples else 0.0), 2)


def _rebalance(bootstrap: str, root: Path) -> dict[str, Any]:
    from chaos.processes import exchange_env, spawn, wait_until
    from chaos.scale_out import run_step, topic_partitions
    from chaos.stream import Lag, LabStream
    from exchange.store import connect
    from schemas.topics import RESULT_TOPICS

    partitions = {(topic, p) for topic in RESULT_TOPICS for p in range(PARTITIONS)}
    group = "bench-scale-rebalance"
    figures: dict[str, Any] = {"stream_per_s": STREAM_RATE}
    with fresh_pg("hrx_bench_scale_rebalance") as url:
        env = exchange_env(bootstrap=bootstrap, var_dir=root, database_url=url, group=group,
                           HRX_TOPIC_PARTITIONS=topic_partitions())
        run_step("migrate-rebalance", ["migrate"], env, root)
        database = connect(url)
        stream = LabStream(bootstrap, tag="SCALE-", rate=STREAM_RATE, batch=20).start()
        lag = Lag(bootstrap, group)
        engines = [spawn(f"rebalance-{k}", ["engine"], env, root) for k in range(2)]
        samples: list[tuple[float, int]] = []
        lags: list[tuple[float, int]] = []
        caught_up = STREAM_RATE / 2

        def sample_for(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                samples.append((time.monotonic(), _count(database)))
                lags.append((time.monotonic(), lag(stream.snapshot()[1])))
                time.sleep(0.05)

        def steady_after(since: float) -> float | None:
            """Seconds from ``since`` until the lag was last above half a second of stream (None: it still is)."""
            late = [at for at, behind in lags if at >= since and behind > caught_up]
            if lags and lags[-1][1] > caught_up:
                return None
            return round(max(late) - since, 1) if late else 0.0
        try:
            if not wait_until(lambda: _stable([e.log_path for e in engines], partitions), 120, 0.1):
                raise RuntimeError("two engines: the group did not settle within 120 s")
            wait_until(lambda: lag(stream.snapshot()[1]) <= caught_up, 90, 0.2)
            sample_for(5.0)
            joined_at = time.monotonic()
            engines.append(spawn("rebalance-2", ["engine"], env, root))  # a third engine joins
            sample_for(WINDOW_S)
            figures["join_longest_store_gap_s"] = _longest_gap(samples, joined_at)
            figures["join_lag_steady_after_s"] = steady_after(joined_at)
            figures["join_settled"] = _stable([e.log_path for e in engines], partitions)
            samples.clear()
            lags.clear()
            sample_for(3.0)
            killed_at = time.monotonic()
            engines[0].kill9()  # an engine dies: its partitions wait for its session to time out
            sample_for(WINDOW_S)
            figures["kill_longest_store_gap_s"] = _longest_gap(samples, killed_at)
            figures["kill_lag_steady_after_s"] = steady_after(killed_at)
            figures["kill_settled"] = _stable([e.log_path for e in engines[1:]], partitions)
        finally:
            stream.stop()
            lag.close()
            for engine in engines:
                engine.stop()
            database.dispose()
    say(f"scale_out: rebalance with a stream of {STREAM_RATE:.0f}/s: {figures}")
    return figures


def run(quick: bool = False, events: int | None = None) -> Outcome:
    from chaos.scale_out import RESULT_PARTITIONS
    from exchange.broker import EmbeddedBroker, ensure_topics
    from schemas.topics import DEFAULT_PARTITIONS, RESULT_TOPICS

    assert RESULT_PARTITIONS == PARTITIONS
    events = events or (15_000 if quick else 60_000)
    out = Outcome("scale_out", "Scale-out: results/s with 1, 2, 3 engine processes (12 partitions); rebalance pause")
    out.sizes = {"events": events, "partitions_per_results_topic": PARTITIONS, "engine_counts": [1, 2, 3],
                 "store": "postgresql", "broker": "embedded tansu", "rebalance_stream_per_s": STREAM_RATE}
    root = Path(tempfile.mkdtemp(prefix="hrx-bench-scale-"))
    rng = random.Random(91)
    with EmbeddedBroker(log_path=root / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, {**DEFAULT_PARTITIONS, **{t: PARTITIONS for t in RESULT_TOPICS}})
        try:
            _measure(out, broker.bootstrap, events, root, rng)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    out.notes.append("Every engine, the broker, PostgreSQL and this script share the machine's CPUs: on 2 cores "
                     "more engines add consumers, not CPU time.")
    return out


def _measure(out: Outcome, bootstrap: str, events: int, root: Path, rng: random.Random) -> None:
    from bench.data import lab_event
    from bench.ingest import produce
    from schemas.topics import TOPIC_LAB

    took = produce(bootstrap, TOPIC_LAB, [lab_event(i, rng) for i in range(events)])
    say(f"scale_out: produced {events} lab events in {took:.1f} s")
    rates = {}
    for engines in (1, 2, 3):
        figures = _throughput(bootstrap, engines, events, root)
        out.figures[f"engines_{engines}"] = figures
        rates[engines] = figures["results_per_s"]
    out.ratios = {f"{k}_vs_1": ratio(rates[k], rates[1]) for k in (2, 3)}
    out.figures["rebalance"] = _rebalance(bootstrap, root)

"""Scenario ``engine-kill``: ``kill -9`` of the engine process, again and again, in the middle of a stream.

Rule under test (docs/rules.md, "Delivery", Kafka to SQL): the engine commits a batch's offsets only after the
SQL transaction storing that batch committed, and the store's natural keys turn a replayed batch into no-ops;
so however often the engine dies, every event the broker acknowledged is stored exactly once.

Run, on SQLite and on PostgreSQL at once (each with its own broker, store and stream): a :class:`LabStream`
publishes ``RATE`` events/s; an engine process (``hrx engine``) starts, stores its first new rows, and is
killed with SIGKILL a random 0–``KILL_JITTER`` s later, while it is catching up with the backlog the previous
kill left; ``KILLS`` times (3 in the short form). Then the stream stops and a last engine drains the rest and
is stopped with SIGTERM.

Oracle: every acknowledged report stored, with one row and all of its observations (zero duplicates); the
engine group's committed offsets back at the end of the log (lag zero) within ``DRAIN_TIMEOUT`` s; no engine
exited on its own (crash) and each stored something within ``START_TIMEOUT`` s of starting (else a hang).
"""
from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chaos.figures import Figures
from chaos.processes import RestartableBroker, exchange_env, run_directory, spawn, wait_until
from chaos.stores import BACKENDS, StoredResults, duplicates, fresh_store
from chaos.stream import Lag, LabStream

KILLS = 30
SHORT_KILLS = 3
RATE = 300.0  # events/s: each restart (start-up + joining the group, ~12 s on tansu) leaves a backlog to kill into
KILL_JITTER = 1.0
START_TIMEOUT = 90.0
DRAIN_TIMEOUT = 180.0
GROUP = "chaos-engine"


def run(short: bool = False) -> list[Figures]:
    kills = SHORT_KILLS if short else KILLS
    with run_directory("engine-kill") as tmp:
        with ThreadPoolExecutor(len(BACKENDS)) as pool:
            return list(pool.map(lambda backend: kill_engine(backend, kills, tmp), BACKENDS))


def kill_engine(backend: str, kills: int, root: Path, seed: int = 30) -> Figures:
    """``kills`` SIGKILLs of the engine on ``backend`` mid-stream, then a drain; the figures and the verdict."""
    figures = Figures("engine-kill", backend, tries_of="kills -9")
    directory = root / backend
    directory.mkdir()
    rng = random.Random(seed)
    with RestartableBroker(directory / "tansu.log") as broker, \
            fresh_store(backend, directory, f"engine_kill_{backend}") as url:
        stored = StoredResults(url)
        stream = LabStream(broker.bootstrap, tag=f"EK-{backend}-", rate=RATE).start()
        lag = Lag(broker.bootstrap, GROUP)
        env = exchange_env(bootstrap=broker.bootstrap, var_dir=directory, database_url=url, group=GROUP)
        first_store: list[float] = []
        kills_with_backlog = 0
        try:
            for k in range(kills):
                engine = spawn(f"engine-{k}", ["engine"], env, directory)
                before, started = stored.count(), time.monotonic()
                progressed = wait_until(lambda: stored.count() > before or not engine.alive(), START_TIMEOUT, 0.05)
                if engine.crashed:
                    figures.crashes += 1
                    figures.failures.append(f"engine {k} exited by itself: {engine.tail(600)!r}")
                    continue
                if not progressed:
                    figures.hangs += 1
                    figures.failures.append(f"engine {k} stored nothing within {START_TIMEOUT:.0f} s")
                    engine.kill9()
                    continue
                first_store.append(time.monotonic() - started)
                time.sleep(rng.uniform(0, KILL_JITTER))
                engine.kill9()
                figures.tries += 1
                _, ends = stream.snapshot()
                kills_with_backlog += lag(ends) > 0
            stream.stop()
            acknowledged, ends = stream.snapshot()
            load_ended = time.monotonic()
            engine = spawn("engine-final", ["engine"], env, directory)
            drained = wait_until(lambda: stored.count() >= len(acknowledged) and lag(ends) == 0 or engine.crashed,
                                 DRAIN_TIMEOUT, 0.5)
            if drained and not engine.crashed:
                figures.lag_zero_seconds = round(time.monotonic() - load_ended, 1)
            time.sleep(2.0)  # a replay still under way must not add rows
            if engine.crashed:
                figures.crashes += 1
                figures.failures.append(f"the last engine exited by itself: {engine.tail(600)!r}")
            status = engine.stop()
            rows, observations = stored.rows_per_key(), stored.observations_per_key()
            final_lag = lag(ends)
        finally:
            stream.stop()
            lag.close()
            stored.close()
    missing = [key for key in acknowledged if key not in rows]
    wrong_observations = [key for key, n in acknowledged.items() if key in rows and observations[key] != n]
    figures.acknowledged = len(acknowledged)
    figures.stored = len(acknowledged) - len(missing)
    figures.lost_not_allowed = len(missing)
    figures.duplicates = duplicates(rows) + len(wrong_observations)
    figures.extra = {"events_sent": stream.sent, "sends_not_acknowledged": stream.failed_sends,
                     "stored_not_acknowledged": len(set(rows) - set(acknowledged)),
                     "kills_with_backlog": kills_with_backlog,
                     "start_to_first_store_s": _spread(first_store), "last_engine_exit": status}
    figures.expect(figures.tries == kills, f"{kills - figures.tries} of {kills} kills did not happen")
    figures.expect(not missing, f"{len(missing)} acknowledged report(s) not stored, e.g. {missing[:3]}")
    figures.expect(figures.duplicates == 0, f"{figures.duplicates} duplicate row(s) or observation sets")
    figures.expect(final_lag == 0, f"lag {final_lag} after the drain")
    figures.expect(figures.lag_zero_seconds is not None, f"lag not back to zero within {DRAIN_TIMEOUT:.0f} s")
    figures.expect(kills_with_backlog > 0, "no kill landed while the engine had a backlog (not mid-stream)")
    return figures


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[0]:.1f}–{ordered[-1]:.1f} s (median {ordered[len(ordered) // 2]:.1f})"

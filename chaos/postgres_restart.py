"""Scenario ``postgres-restart``: the PostgreSQL server restarted while the engine is ingesting.

Rule under test (docs/rules.md, "Delivery", Kafka to SQL): a batch's offsets are committed only after its SQL
transaction committed, and the engine waits out a database outage instead of skipping (``ResultEngine.run``:
"broker or database outages are waited out, never skipped"). So when PostgreSQL goes away mid-batch, the batch
is not committed, the engine retries from the last committed offsets once the server is back, and every
acknowledged event is stored exactly once — by the same engine process, which must not exit.

Run: a :class:`~chaos.stream.LabStream` at ``RATE`` events/s, one ``hrx engine`` process on a fresh database of
the machine's cluster (127.0.0.1:5432); once the engine is storing, ``pg_ctlcluster --skip-systemctl-redirect
<version> main restart`` (a fast shutdown: every connection is cut), ``RESTARTS`` times (1 in the short form).

This restarts the server every other PostgreSQL user of the machine shares: run it alone (CI runs the suite
serially), never beside other tests.

Oracle: every acknowledged report stored with all its observations, zero duplicates; the engine stores again
within ``RECOVERY_TIMEOUT`` s of each restart and never exits; lag zero within ``DRAIN_TIMEOUT`` s.
"""
from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

from chaos.figures import Figures
from chaos.processes import RestartableBroker, exchange_env, run_directory, spawn, wait_until
from chaos.stores import StoredResults, duplicates, ensure_pg, fresh_store, pg_clusters, pg_up
from chaos.stream import Lag, LabStream

RESTARTS = 3
SHORT_RESTARTS = 1
RATE = 2000.0  # events/s: the engine is writing most of the time, so a restart cuts a batch in flight
START_TIMEOUT = 90.0
RECOVERY_TIMEOUT = 120.0
DRAIN_TIMEOUT = 180.0
GROUP = "chaos-engine"


def run(short: bool = False) -> list[Figures]:
    with run_directory("postgres-restart") as tmp:
        return [restart_postgres(SHORT_RESTARTS if short else RESTARTS, tmp)]


def restart_server(version: str) -> tuple[bool, float, str]:
    """``pg_ctlcluster … restart``; (succeeded, seconds until the server answered again, its output)."""
    started = time.monotonic()
    proc = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                          capture_output=True, text=True, timeout=180, check=False)
    wait_until(pg_up, 60, 0.2)
    return proc.returncode == 0, time.monotonic() - started, (proc.stdout + proc.stderr).strip()


def restart_postgres(restarts: int, root: Path, seed: int = 5432) -> Figures:
    figures = Figures("postgres-restart", "postgresql", tries_of="server restarts")
    clusters = pg_clusters()
    if not clusters:
        figures.failures.append("no PostgreSQL cluster in /etc/postgresql to restart")
        return figures
    rng = random.Random(seed)
    down: list[float] = []
    recovered: list[float] = []
    with RestartableBroker(root / "tansu.log") as broker, fresh_store("postgresql", root, "pg_restart") as url:
        stored = StoredResults(url)
        stream = LabStream(broker.bootstrap, tag="PG-", rate=RATE).start()
        lag = Lag(broker.bootstrap, GROUP)
        engine = spawn("engine", ["engine"],
                       exchange_env(bootstrap=broker.bootstrap, var_dir=root, database_url=url, group=GROUP), root)
        try:
            if not wait_until(lambda: stored.count() > 0 or engine.crashed, START_TIMEOUT, 0.1) or engine.crashed:
                figures.hangs += not engine.crashed
                figures.failures.append(f"the engine did not start storing: {engine.tail(600)!r}")
            for _ in range(restarts if figures.ok else 0):
                time.sleep(rng.uniform(0.5, 2.0))  # mid-ingest: the stream keeps the engine busy
                ok, seconds, output = restart_server(clusters[0])
                figures.tries += 1
                down.append(round(seconds, 1))
                figures.expect(ok, f"pg_ctlcluster restart failed: {output[-300:]}")
                before, since = stored.count(), time.monotonic()
                if wait_until(lambda: stored.count() > before or engine.crashed, RECOVERY_TIMEOUT, 0.2) \
                        and not engine.crashed:
                    recovered.append(round(time.monotonic() - since, 1))
                elif not engine.crashed:
                    figures.hangs += 1
                    figures.failures.append(f"the engine stored nothing within {RECOVERY_TIMEOUT:.0f} s of the "
                                            f"restart: {engine.tail(800)!r}")
                if engine.crashed:
                    break
            stream.stop()
            acknowledged, ends = stream.snapshot()
            load_ended = time.monotonic()
            drained = wait_until(lambda: stored.count() >= len(acknowledged) and lag(ends) == 0 or engine.crashed,
                                 DRAIN_TIMEOUT, 0.5)
            if drained and not engine.crashed:
                figures.lag_zero_seconds = round(time.monotonic() - load_ended, 1)
            time.sleep(2.0)
            if engine.crashed:
                figures.crashes += 1
                figures.failures.append(f"the engine exited by itself: {engine.tail(1200)!r}")
            rows, observations = stored.rows_per_key(), stored.observations_per_key()
            final_lag = lag(ends)
        finally:
            stream.stop()
            engine.stop()
            lag.close()
            stored.close()
            ensure_pg(60)
    missing = [key for key in acknowledged if key not in rows]
    wrong_observations = [key for key, n in acknowledged.items() if key in rows and observations[key] != n]
    figures.acknowledged = len(acknowledged)
    figures.stored = len(acknowledged) - len(missing)
    figures.lost_not_allowed = len(missing)
    figures.duplicates = duplicates(rows) + len(wrong_observations)
    figures.extra = {"events_sent": stream.sent, "restart_took_s": down, "engine_stored_again_after_s": recovered,
                     "engine_warnings": _warnings(engine.log_path)}
    figures.expect(not missing, f"{len(missing)} acknowledged report(s) not stored, e.g. {missing[:3]}")
    figures.expect(figures.duplicates == 0, f"{figures.duplicates} duplicate row(s) or observation sets")
    figures.expect(final_lag == 0, f"lag {final_lag} after the drain")
    figures.expect(figures.lag_zero_seconds is not None, f"lag not back to zero within {DRAIN_TIMEOUT:.0f} s")
    return figures


def _warnings(log: Path) -> int:
    """The engine's "resuming from the last committed offsets" warnings: one per outage it waited out."""
    try:
        return log.read_text(errors="replace").count("resuming from the last committed offsets")
    except OSError:
        return 0

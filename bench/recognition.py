"""3. Recognition check latency vs patient history and store size (PostgreSQL), against the floor of one
indexed SELECT of the same patient's current rows.

Data: a dedicated database per store size (``hrx_bench_100k``, ``hrx_bench_1m``), migrated with the real
migrations and filled with COPY (secondary indexes dropped during the load and rebuilt), reused by later runs
when its ``bench_meta`` row says it holds the same seed, size and layout. Target patients have 50, 500 and
5,000 current lab results from code-book institutions near the requester; the rest of the store is filler
patients with 10 results each. Timed: the real ``POST /api/v1/recognition/check`` through FastAPI's TestClient
(real code book, real handler, its audit and presentation writes) with ``at`` fixed one day after the newest
result. Floor: the same patient's ``result_heads ⋈ results`` rows fetched with one raw psycopg SELECT.
"""
from __future__ import annotations

import cProfile
import io
import pstats
import random
import time
from datetime import timedelta
from typing import Any

import orjson

from bench.access import Clients, open_encounters
from bench.common import Outcome, pg_admin_exec, pg_exists, pg_url, ratio, say, summary_ms
from bench.data import (CHECK_AT, EPOCH, OBS_COLUMNS, RESULT_COLUMNS, institutions_near, lab_codes, lab_event,
                        pseudonym)

LAYOUT = "v1"
SEED = 6
REQUESTER = "bj-chaoyang-002"
FILLER_HISTORY = 10
DATA_TABLES = ("results", "result_heads", "observations")


def targets(histories: tuple[int, ...], per_history: dict[int, int]) -> dict[int, list[str]]:
    return {h: [pseudonym(f"target-{h}-{k}") for k in range(per_history[h])] for h in histories}


def _plan(size: int, target_map: dict[int, list[str]]) -> list[tuple[str, int, bool]]:
    """(patient, results, near) for the whole store: targets first, then filler patients."""
    plan = [(p, h, True) for h, ps in target_map.items() for p in ps]
    left = size - sum(h for _, h, _ in plan)
    k = 0
    while left > 0:
        take = min(FILLER_HISTORY, left)
        plan.append((pseudonym(f"filler-{k}"), take, False))
        left -= take
        k += 1
    return plan


def ensure_dataset(size: int, target_map: dict[int, list[str]]) -> tuple[str, float | None]:
    """The URL of a database holding the data set (built now if missing or different); build seconds or None."""
    import psycopg

    from exchange.store import connect, migrate

    name = f"hrx_bench_{size // 1000}k" if size < 1_000_000 else f"hrx_bench_{size // 1_000_000}m"
    url = pg_url(name)
    tag = f"seed={SEED};size={size};layout={LAYOUT};targets=" + ",".join(f"{h}x{len(p)}" for h, p in target_map.items())
    if not pg_exists(name):
        pg_admin_exec(f'CREATE DATABASE "{name}"')
    database = connect(url)
    migrate(database)
    database.dispose()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value text NOT NULL)")
        found = conn.execute("SELECT value FROM bench_meta WHERE key = 'dataset'").fetchone()
        count = conn.execute("SELECT count(*) FROM result_heads").fetchone()[0]
        if found and found[0] == tag and count == size:
            return url, None
    say(f"recognition: building {name} ({size} results, {tag}) …")
    started = time.perf_counter()
    rng = random.Random(SEED)
    near = institutions_near(REQUESTER)
    everyone = sorted(lab_codes())
    with psycopg.connect(dsn) as conn:
        others = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN "
            "('alembic_version', 'bench_meta')").fetchall()]
        _truncate(conn, others, "RESTART IDENTITY CASCADE")
        indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND "
                               "tablename = ANY(%s) AND indexname LIKE 'ix_%%'", (list(DATA_TABLES),)).fetchall()
        for index_name, _ in indexes:
            conn.execute(f'DROP INDEX "{index_name}"')
        conn.commit()
        pk = 0
        stored_at = EPOCH + timedelta(days=1)
        with conn.cursor() as cur:
            with cur.copy(f"COPY results ({', '.join(RESULT_COLUMNS)}) FROM STDIN") as rcopy:
                obs_buffer: list[tuple] = []
                heads_buffer: list[tuple] = []
                for patient, history, is_near in _plan(size, target_map):
                    for _ in range(history):
                        pk += 1
                        issuer = rng.choice(near if is_near else everyone)
                        e = lab_event(pk, rng, patient=patient, issuer=issuer)
                        reported = EPOCH - timedelta(minutes=rng.randrange(0, 365 * 24 * 60))
                        e["reported_at"] = reported.isoformat()
                        item = e["item"]
                        rcopy.write_row((pk, issuer, e["result_id"], 1, "lab", "final", patient, item["unified_code"],
                                         item["local_code"], "v1", reported - timedelta(hours=2), reported, stored_at,
                                         orjson.dumps(e).decode(), "hr.results.lab.v1", 0, pk))
                        for o in e["observations"]:
                            ref = o["reference_range"] or {}
                            obs_buffer.append((pk, o["seq"], o["item"]["unified_code"], o["item"]["local_code"], None,
                                               o["value"], None, o["unit"], ref.get("low"), ref.get("high"), None,
                                               o["interpretation"]))
                        heads_buffer.append((issuer, e["result_id"], 1, pk, patient, reported))
            with cur.copy(f"COPY observations ({', '.join(OBS_COLUMNS)}) FROM STDIN") as ocopy:
                for row in obs_buffer:
                    ocopy.write_row(row)
            with cur.copy("COPY result_heads (issuer, result_id, version, result_pk, patient, reported_at) "
                          "FROM STDIN") as hcopy:
                for row in heads_buffer:
                    hcopy.write_row(row)
            cur.execute("SELECT setval('results_id_seq', %s)", (pk,))
        conn.commit()
        conn.autocommit = True
        conn.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("VACUUM ANALYZE")
        conn.execute("INSERT INTO bench_meta VALUES ('dataset', %s) ON CONFLICT (key) DO UPDATE SET value = "
                     "excluded.value", (tag,))
    took = time.perf_counter() - started
    say(f"recognition: built {name} in {took:.0f}s")
    return url, took


def _truncate(conn: Any, tables: list[str], options: str = "") -> None:
    """TRUNCATE as the store's owner may: the audit's append-only triggers (migration 0004) are set aside for
    the statement, as for any owner's maintenance; the chain starts again from its genesis."""
    guarded = "audit" in tables
    if guarded:
        conn.execute("ALTER TABLE audit DISABLE TRIGGER USER")
    conn.execute(f"TRUNCATE {', '.join(tables)} {options}")
    if guarded:
        conn.execute("ALTER TABLE audit ENABLE TRIGGER USER")


def _reset_writes(url: str) -> None:
    """Empty what checks write (audit, presentations) so that every run starts from the same store."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        others = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN "
            "('alembic_version', 'bench_meta', 'results', 'result_heads', 'observations')").fetchall()]
        if others:
            _truncate(conn, others)


def measure(url: str, target_map: dict[int, list[str]], requests: dict[int, int],
            profile_history: int | None = None) -> dict[str, Any]:
    import psycopg
    from fastapi.testclient import TestClient

    from codes import load_codebook
    from exchange.api import Context, create_app
    from adapters.pseudonymize import Pseudonymizer
    from adapters.publish import Publisher
    from exchange.store import connect, current_results

    _reset_writes(url)
    database = connect(url)
    context = Context(book=load_codebook(), database=database, pseudonymizer=Pseudonymizer(b"hrx-bench-key-0123456789"),
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="bench")
    open_encounters(database, [p for ps in target_map.values() for p in ps], REQUESTER)
    client = TestClient(create_app(context), headers=Clients(database).his(REQUESTER))
    client.__enter__()  # run the app's lifespan as uvicorn does (outbox relay, gc.freeze after start-up)
    floor_conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    floor_sql = ("SELECT r.* FROM result_heads h JOIN results r ON r.id = h.result_pk WHERE h.patient = %s "
                 "ORDER BY h.reported_at DESC, r.id DESC")
    out: dict[str, Any] = {}
    try:
        for history, patients in target_map.items():
            def body(p: str) -> dict[str, Any]:
                return {"patient": {"pseudonym": p}, "requesting_institution": REQUESTER, "at": CHECK_AT.isoformat()}
            for p in patients[:2]:  # warm-up: plans, caches, code book
                response = client.post("/api/v1/recognition/check", json=body(p))
                response.raise_for_status()
                floor_conn.execute(floor_sql, (p,)).fetchall()
            shown = len(response.json()["results"])
            api, floor, store = [], [], []
            for k in range(requests[history]):
                p = patients[k % len(patients)]
                t0 = time.perf_counter()
                rows = floor_conn.execute(floor_sql, (p,)).fetchall()
                t1 = time.perf_counter()
                response = client.post("/api/v1/recognition/check", json=body(p))
                t2 = time.perf_counter()
                assert response.status_code == 200, response.text
                with database.connect() as conn:
                    got = current_results(conn, p)
                t3 = time.perf_counter()
                assert len(rows) == len(got) == history, (len(rows), len(got), history)
                floor.append(t1 - t0)
                api.append(t2 - t1)
                store.append(t3 - t2)
            out[str(history)] = {"check": summary_ms(api), "floor_select": summary_ms(floor),
                                 "current_results_only": summary_ms(store), "entries_in_answer": shown,
                                 "ratio_p50": ratio(summary_ms(api)["p50_ms"], summary_ms(floor)["p50_ms"]),
                                 "ratio_p99": ratio(summary_ms(api)["p99_ms"], summary_ms(floor)["p99_ms"])}
        if profile_history in target_map:
            p = target_map[profile_history][0]
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(5):
                client.post("/api/v1/recognition/check", json={"patient": {"pseudonym": p}, "requesting_institution":
                                                               REQUESTER, "at": CHECK_AT.isoformat()})
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
            out["profile_top"] = text.getvalue()
    finally:
        floor_conn.close()
        client.__exit__(None, None, None)
        database.dispose()
    return out


def run(quick: bool = False) -> Outcome:
    out = Outcome("recognition", "Recognition check latency (PostgreSQL) vs the floor of one indexed SELECT")
    if quick:
        sizes, histories = (100_000,), (50, 500, 5000)
        per_history, requests = {50: 5, 500: 5, 5000: 1}, {50: 60, 500: 30, 5000: 5}
    else:
        sizes, histories = (100_000, 1_000_000), (50, 500, 5000)
        per_history, requests = {50: 10, 500: 10, 5000: 3}, {50: 300, 500: 200, 5000: 20}
    target_map = targets(histories, per_history)
    out.sizes = {"stores": list(sizes), "histories": list(histories), "patients_per_history": {str(k): v for k, v in per_history.items()},
                 "requests_per_history": {str(k): v for k, v in requests.items()}, "filler_history": FILLER_HISTORY, "requester": REQUESTER,
                 "at": CHECK_AT.isoformat(), "observations_per_result": "1-3"}
    for size in sizes:
        url, built = ensure_dataset(size, target_map)
        if built is not None:
            out.figures[f"build_{size}_s"] = round(built)
        profile = 500 if size == max(sizes) else None
        figures = measure(url, target_map, requests, profile_history=profile)
        profile_text = figures.pop("profile_top", None)
        if profile_text:
            out.notes.append(f"cProfile of 5 checks, 500 results, store {size}:\n" + profile_text)
        out.figures[str(size)] = figures
        for history, f in figures.items():
            say(f"recognition: store {size:>9,} history {int(history):>5}: check p50 {f['check']['p50_ms']:8.2f} ms "
                f"p99 {f['check']['p99_ms']:8.2f} ms | floor p50 {f['floor_select']['p50_ms']:7.2f} p99 "
                f"{f['floor_select']['p99_ms']:7.2f} ms | ×{f['ratio_p99']} (p99) | current_results p50 "
                f"{f['current_results_only']['p50_ms']:.2f} ms")
            out.ratios[f"{size}_{history}_check_vs_floor_p99"] = f["ratio_p99"]
    key_size = max(sizes)
    f500 = out.figures[str(key_size)].get("500")
    if f500:
        out.goals[f"p99_lt_50ms_at_500_in_{key_size}"] = f500["check"]["p99_ms"] < 50
        out.goals[f"within_5x_floor_at_500_in_{key_size}"] = (f500["ratio_p99"] or 99) <= 5
    if key_size < 1_000_000:
        out.notes.append("quick mode: goal judged on the 100k store, not 1M")
    return out


if __name__ == "__main__":
    import sys

    result = run(quick="--quick" in sys.argv)
    print(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())

"""7. Memory: peak RSS (VmHWM) of the engine and of the API while the store holds 1 M results (quick: 100 k).

Each runs in its own child process (``python -m bench.memory engine|api|idle …``) so that its peak is its own:
- engine: the real ResultEngine consuming fresh events into a copy (``CREATE DATABASE … TEMPLATE``) of the
  recognition benchmark's store;
- api: the real app (TestClient) answering recognition checks for patients with 50, 500 and 5,000 results;
- idle: a process importing the same modules and doing nothing (the ratio's denominator).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import Outcome, pg_admin_exec, peak_rss_mib, pg_url, ratio, say


def _child(*args: str) -> dict[str, Any]:
    found = subprocess.run([sys.executable, "-m", "bench.memory", *args], capture_output=True, text=True, timeout=900)
    if found.returncode != 0:
        raise RuntimeError(f"memory child {args[0]} failed: {found.stderr[-2000:]}")
    return json.loads(found.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> Outcome:
    from bench import recognition
    from bench.ingest import produce
    from bench.data import lab_event
    from exchange.broker import EmbeddedBroker, ensure_topics
    from schemas.topics import DEFAULT_PARTITIONS, TOPIC_LAB
    import random

    size = 100_000 if quick else 1_000_000
    events = 5_000 if quick else 50_000
    per_history = {50: 5, 500: 5, 5000: 1} if quick else {50: 10, 500: 10, 5000: 3}
    target_map = recognition.targets((50, 500, 5000), per_history)
    url, _ = recognition.ensure_dataset(size, target_map)
    out = Outcome("memory", f"Peak RSS of the engine and the API with {size:,} results in the store")
    out.sizes = {"store_results": size, "engine_events_consumed": events, "api_checks": 60 if quick else 200}
    idle = _child("idle")
    out.figures["idle_process_mib"] = idle["peak_rss_mib"]
    api = _child("api", url, json.dumps({str(k): v for k, v in target_map.items()}), str(out.sizes["api_checks"]))
    out.figures["api_peak_mib"] = api["peak_rss_mib"]
    copy = f"hrx_bench_mem_{uuid.uuid4().hex[:6]}"
    source = url.rsplit("/", 1)[1]
    pg_admin_exec(f'CREATE DATABASE "{copy}" TEMPLATE "{source}"')
    try:
        with EmbeddedBroker(log_path=Path(tempfile.mkdtemp()) / "tansu.log") as broker:
            ensure_topics(broker.bootstrap, DEFAULT_PARTITIONS)
            rng = random.Random(77)
            produce(broker.bootstrap, TOPIC_LAB, [lab_event(10_000_000 + i, rng) for i in range(events)])
            engine = _child("engine", pg_url(copy), broker.bootstrap, str(events))
    finally:
        pg_admin_exec(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
    out.figures["engine_peak_mib"] = engine["peak_rss_mib"]
    out.figures["engine_stored"] = engine["stored"]
    out.ratios["engine_vs_idle"] = ratio(engine["peak_rss_mib"], idle["peak_rss_mib"])
    out.ratios["api_vs_idle"] = ratio(api["peak_rss_mib"], idle["peak_rss_mib"])
    say(f"memory: store {size:,} results | engine peak {engine['peak_rss_mib']} MiB after {engine['stored']} events | "
        f"API peak {api['peak_rss_mib']} MiB after {out.sizes['api_checks']} checks | idle {idle['peak_rss_mib']} MiB")
    out.notes.append("no numeric goal in the issue; peak RSS does not grow with the store size as long as the "
                     "largest single answer (5,000 results) fits")
    return out


def _imports() -> None:
    import codes  # noqa: F401
    import exchange.api  # noqa: F401
    import exchange.engine  # noqa: F401
    import fastapi.testclient  # noqa: F401


def _engine(url: str, bootstrap: str, n: int) -> dict[str, Any]:
    from exchange.engine import ResultEngine
    from adapters.publish import Publisher
    from exchange.store import connect

    database = connect(url)
    publisher = Publisher(bootstrap)
    engine = ResultEngine(bootstrap, database, f"bench-mem-{uuid.uuid4().hex[:6]}", publisher, session_timeout_ms=6000)
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 600
    while engine.stats.stored + engine.stats.duplicates < n and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join(30)
    return {"peak_rss_mib": peak_rss_mib(), "stored": engine.stats.stored}


def _api(url: str, target_map: dict[str, list[str]], checks: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from bench.access import Clients, open_encounters
    from bench.data import CHECK_AT
    from bench.recognition import REQUESTER
    from codes import load_codebook
    from exchange.api import Context, create_app
    from adapters.pseudonymize import Pseudonymizer
    from adapters.publish import Publisher
    from exchange.store import connect

    database = connect(url)
    context = Context(book=load_codebook(), database=database, pseudonymizer=Pseudonymizer(b"hrx-bench-key-0123456789"),
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="bench")
    patients = [p for ps in target_map.values() for p in ps]
    open_encounters(database, patients, REQUESTER)
    with TestClient(create_app(context), headers=Clients(database).his(REQUESTER)) as client:
        for k in range(checks):
            client.post("/api/v1/recognition/check", json={"patient": {"pseudonym": patients[k % len(patients)]},
                                                           "requesting_institution": REQUESTER,
                                                           "at": CHECK_AT.isoformat()}).raise_for_status()
    return {"peak_rss_mib": peak_rss_mib()}


if __name__ == "__main__":
    _imports()
    kind = sys.argv[1]
    if kind == "idle":
        print(json.dumps({"peak_rss_mib": peak_rss_mib()}))
    elif kind == "engine":
        print(json.dumps(_engine(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    elif kind == "api":
        print(json.dumps(_api(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]))))
    else:
        print(run(quick="--quick" in sys.argv).as_dict())

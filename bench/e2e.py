"""2. End to end: FHIR (POST /fhir) and HL7 v2 (MLLP) in → the answer available from the check endpoint.

The real processes, as in production: ``hrx serve`` (API), ``hrx engine`` and ``hrx adapter hl7 --listen`` as
child processes, an embedded tansu broker, a fresh PostgreSQL database. This process sends results at a steady
(open-loop) rate with a pool of senders; one result in ``SAMPLE_EVERY`` belongs to a fresh patient, and a
poller asks ``POST /api/v1/recognition/check`` for that patient every few milliseconds until the result
shows: latency = first answer holding it − start of its send. There is no baseline process to compare with:
the ratio printed is achieved rate / target rate.

First, closed loop, the API process's own cost: CPU seconds of the ``hrx serve`` process (``/proc/PID/stat``)
per ``POST /fhir`` and per check. One API process runs its Python under one lock, so the FHIR door's rate on
one process is bounded by about 1 / (CPU per POST), less what the checks of the poller take from it.
"""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from bench.access import Clients, issuer_of
from bench.common import Outcome, fresh_pg, say, summary_ms
from bench.data import PSEUDONYM_KEY

SAMPLE_EVERY = 10
REQUESTER = "bj-chaoyang-002"  # the hospital whose HIS polls the check
POLL_S = 0.005


def _wait_port(port: int, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def _post(url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _resident(n: int) -> str:
    """A valid synthetic resident ID, one per n (birth date and sequence number vary)."""
    from datetime import date, timedelta

    from schemas.resident_id import make_resident_id

    born = date(1940, 1, 1) + timedelta(days=(n // 1000) % 25_000)
    return make_resident_id(f"310115{born:%Y%m%d}{n % 1000:03d}")


def _fhir_payloads(n: int, tag: int, clients: Clients) -> list[tuple[bytes, str | None, dict[str, str] | None]]:
    """Bundles with the headers of their issuer's source client."""
    from bench.fhir import bundles

    out = []
    for i, bundle in enumerate(bundles(n, seed=tag)):
        sampled = i % SAMPLE_EVERY == 0
        rid = _resident(tag * 1_000_000 + i) if sampled else _resident(tag * 1_000_000 + 999_999)
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Patient":
                entry["resource"]["identifier"][0]["value"] = rid
        out.append((orjson.dumps(bundle), rid if sampled else None, clients.source(issuer_of(bundle))))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (proc(5): ``utime`` and ``stime``, fields 14 and 15 of
    ``/proc/PID/stat``, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve_cost(api: str, serve_pid: int, payloads: list[tuple[bytes, str | None, dict[str, str] | None]],
                his: dict[str, str], senders: int = 4) -> dict[str, Any]:
    """The API process's CPU per ``POST /fhir`` (``senders`` threads, each sending as soon as it is answered) and
    per check (one per sampled patient, once the last of them is visible), with the closed-loop rate."""
    slots = iter(payloads)
    lock = threading.Lock()
    errors = [0]

    def sender() -> None:
        while True:
            with lock:
                item = next(slots, None)
            if item is None:
                return
            body, _, headers = item
            if _post(f"{api}/fhir", body, "application/fhir+json", headers)[0] != 200:
                errors[0] += 1

    def check(rid: str) -> bool:
        status, body = _post(f"{api}/api/v1/recognition/check", orjson.dumps(
            {"patient": {"resident_id": rid}, "requesting_institution": REQUESTER, "encounter_id": f"E2E-{rid}"}),
            "application/json", his)
        return status == 200 and bool(orjson.loads(body)["results"])

    cpu0, started = cpu_seconds(serve_pid), time.perf_counter()
    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu1, sent_s = cpu_seconds(serve_pid), time.perf_counter() - started
    sampled = [rid for _, rid, _ in payloads if rid]
    deadline = time.monotonic() + 120
    while not check(sampled[-1]):  # the engine has stored the last one: every check below finds its result
        if time.monotonic() > deadline:
            raise RuntimeError("the closed-loop results never became visible")
        time.sleep(0.05)
    cpu2 = cpu_seconds(serve_pid)
    found = sum(check(rid) for rid in sampled)
    cpu3 = cpu_seconds(serve_pid)
    return {"posts": len(payloads), "senders": senders, "closed_loop_per_s": round(len(payloads) / sent_s, 1),
            "serve_cpu_ms_per_post": round(1000 * (cpu1 - cpu0) / len(payloads), 2),
            "checks": len(sampled), "checks_with_result": found,
            "serve_cpu_ms_per_check": round(1000 * (cpu3 - cpu2) / len(sampled), 2), "errors": errors[0]}


def _hl7_payloads(n: int, tag: int, clients: Clients) -> list[tuple[bytes, str | None, dict[str, str] | None]]:
    from bench.mllp import messages

    out = []
    for i, message in enumerate(messages(n, f"E{tag}")):
        sampled = i % SAMPLE_EVERY == 0
        rid = _resident(tag * 1_000_000 + i) if sampled else _resident(tag * 1_000_000 + 999_999)
        out.append((message.replace(b"110105198003120024", rid.encode()), rid if sampled else None, None))
    return out


def _load(source: str, payloads: list[tuple[bytes, str | None, dict[str, str] | None]], rate: float, api: str,
          hl7_port: int, senders: int, his: dict[str, str]) -> dict[str, Any]:
    from adapters.hl7 import MLLPClient

    pending: queue.Queue[tuple[str, float]] = queue.Queue()
    latencies: list[float] = []
    errors = [0]
    done_sending = threading.Event()
    slots = iter(range(len(payloads)))
    lock = threading.Lock()
    started = time.perf_counter() + 0.2

    def sender() -> None:
        client = MLLPClient("127.0.0.1", hl7_port) if source == "hl7" else None
        try:
            while True:
                with lock:
                    k = next(slots, None)
                if k is None:
                    return
                due = started + k / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                body, rid, headers = payloads[k]
                t0 = time.perf_counter()
                if client is not None:
                    ok = b"MSA|AA" in client.send(body)
                else:
                    ok = _post(f"{api}/fhir", body, "application/fhir+json", headers)[0] == 200
                if not ok:
                    errors[0] += 1
                elif rid:
                    pending.put((rid, t0))
        finally:
            if client is not None:
                client.close()

    def poller() -> None:
        waiting: list[tuple[str, float]] = []
        while not (done_sending.is_set() and pending.empty() and not waiting):
            while True:
                try:
                    waiting.append(pending.get_nowait())
                except queue.Empty:
                    break
            still = []
            for rid, t0 in waiting:
                status, body = _post(f"{api}/api/v1/recognition/check", orjson.dumps(
                    {"patient": {"resident_id": rid}, "requesting_institution": REQUESTER,
                     "encounter_id": f"E2E-{rid}"}), "application/json", his)  # the HIS names the encounter
                if status == 200 and orjson.loads(body)["results"]:
                    latencies.append(time.perf_counter() - t0)
                elif time.perf_counter() - t0 < 60:
                    still.append((rid, t0))
                else:
                    errors[0] += 1
            waiting = still
            time.sleep(POLL_S)

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    poll = threading.Thread(target=poller)
    poll.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent_s = time.perf_counter() - started
    done_sending.set()
    poll.join()
    return {"target_per_s": rate, "achieved_per_s": round(len(payloads) / sent_s, 1), "sent": len(payloads),
            "errors": errors[0], "latency": summary_ms(latencies)}


def run(quick: bool = False) -> Outcome:
    from exchange.broker import EmbeddedBroker, ensure_topics, free_port
    from exchange.store import connect
    from schemas.topics import DEFAULT_PARTITIONS

    seconds = 5 if quick else 15
    out = Outcome("e2e", "End to end: FHIR / HL7 in → answer from the check endpoint (p50/p95 latency)")
    out.sizes = {"closed_loop_posts": 300 if quick else 2000, "seconds_per_rate": seconds, "rates": [100, 1000], "sample_every": SAMPLE_EVERY,
                 "poll_interval_ms": POLL_S * 1000, "results_per_message": 1}
    tmp = Path(tempfile.mkdtemp(prefix="hrx-bench-e2e-"))
    children: list[subprocess.Popen[bytes]] = []
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker, fresh_pg("hrx_bench_e2e") as db_url:
        ensure_topics(broker.bootstrap, DEFAULT_PARTITIONS)
        api_port, hl7_port = free_port(), free_port()
        env = dict(os.environ, HRX_KAFKA_BOOTSTRAP=broker.bootstrap, HRX_DATABASE_URL=db_url,
                   HRX_PSEUDONYM_KEY=PSEUDONYM_KEY, HRX_VAR_DIR=str(tmp), HRX_HTTP_PORT=str(api_port),
                   HRX_ENGINE_GROUP="bench-e2e")
        hrx = [sys.executable, "-m", "exchange.cli"]
        subprocess.run(hrx + ["migrate"], env=env, check=True, stdout=subprocess.DEVNULL)  # before serve/engine
        try:
            for args in (["serve", "--port", str(api_port)], ["engine"],
                         ["adapter", "hl7", "--listen", f"127.0.0.1:{hl7_port}", "--institution", "bj-chaoyang-001"]):
                log = open(tmp / f"{args[0]}-{args[-1]}.log", "wb")  # noqa: SIM115
                children.append(subprocess.Popen(hrx + args, env=env, stdout=log, stderr=subprocess.STDOUT))
            _wait_port(api_port)
            _wait_port(hl7_port)
            api = f"http://127.0.0.1:{api_port}"
            clients = Clients(connect(db_url))  # `hrx migrate` made its schema
            his = clients.his(REQUESTER)
            # warm-up: the engine joins its group; wait until one result is visible end to end
            warm = _load("fhir", _fhir_payloads(5, 90, clients), 5, api, hl7_port, 1, his)
            if not warm["latency"]["n"]:
                raise RuntimeError(f"warm-up result never became visible: {warm}")
            cost = _serve_cost(api, children[0].pid, _fhir_payloads(300 if quick else 2000, 80, clients), his)
            out.figures["serve_cost"] = cost
            say(f"e2e: closed loop {cost['closed_loop_per_s']}/s | serve CPU per POST /fhir "
                f"{cost['serve_cpu_ms_per_post']} ms, per check {cost['serve_cpu_ms_per_check']} ms")
            for source, make in (("fhir", _fhir_payloads), ("hl7", _hl7_payloads)):
                for k, rate in enumerate((100, 1000)):
                    n = int(rate * seconds)
                    figures = _load(source, make(n, 10 + 2 * k + (source == "hl7"), clients), rate, api, hl7_port,
                                    senders=4 if rate <= 100 else 16, his=his)
                    out.figures[f"{source}_{rate}_per_s"] = figures
                    out.ratios[f"{source}_{rate}_achieved_vs_target"] = round(figures["achieved_per_s"] / rate, 3)
                    lat = figures["latency"]
                    say(f"e2e: {source:4s} target {rate:5d}/s achieved {figures['achieved_per_s']:7.1f}/s | "
                        f"visible in check p50 {lat['p50_ms']} ms p95 {lat['p95_ms']} ms (n={lat['n']}, "
                        f"errors {figures['errors']})")
        finally:
            for child in children:
                child.terminate()
            for child in children:
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
    out.notes.append("open loop: a rate the system cannot sustain shows as achieved < target and growing latency")
    return out


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv).as_dict())

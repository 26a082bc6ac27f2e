"""9. CDS Hooks ``order-sign`` latency (PostgreSQL) against the check's own floor and the JSON order-time check.

Data: a fresh database per run (dropped afterwards), migrated with the real migrations and filled through the
store's own ingest: target patients with 50 and 500 current lab results reported in the last week by issuers
near the requester (so that most are recognizable and the hook answers with cards), and filler patients with 10
results each. Timed, for the same patient in the same loop:

- ours: the real ``POST /cds-services/hrx-duplicate-order-sign`` through FastAPI's TestClient (HIS bearer token,
  draft orders: a Bundle of ``DRAFT_ORDERS`` ServiceRequests in LOINC for items the patient has results of, and
  one code no table maps) — the read, the cards, their ``cds_cards`` rows, presentations and audit;
- the check's floor: the same patient's ``result_heads ⋈ results`` rows by one raw psycopg SELECT (as bench 3);
- the JSON order-time check (``POST /api/v1/recognition/check`` with the same unified items).

Goal (issue 19): the hook's p99 ≤ 100 ms at 500 results (EHRs drop services slower than about 500 ms).
``python -m bench.cds_hooks --small`` runs a tiny store to show the benchmark works.
"""
from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bench.access import Clients, open_encounters
from bench.common import Outcome, fresh_pg, ratio, say, summary_ms
from bench.data import PSEUDONYM_KEY, institutions_near, lab_event, pseudonym

SEED = 9
REQUESTER = "bj-chaoyang-002"
FILLER_HISTORY = 10
RECENT = timedelta(days=7)
DRAFT_ORDERS = 5
SERVICE = "hrx-duplicate-order-sign"


def _events(size: int, histories: dict[int, int], now: datetime) -> tuple[list[dict[str, Any]], dict[int, list[str]]]:
    rng = random.Random(SEED)
    near = institutions_near(REQUESTER)
    targets = {h: [pseudonym(f"cds-target-{h}-{k}") for k in range(n)] for h, n in histories.items()}
    plan = [(p, h) for h, ps in targets.items() for p in ps]
    left, k = size - sum(h for _, h in plan), 0
    while left > 0:
        plan.append((pseudonym(f"cds-filler-{k}"), min(FILLER_HISTORY, left)))
        left, k = left - FILLER_HISTORY, k + 1
    events, i = [], 0
    for patient, history in plan:
        for _ in range(history):
            i += 1
            reported = now - timedelta(minutes=rng.randrange(60, int(RECENT.total_seconds() // 60)))
            events.append(lab_event(i, rng, patient=patient, issuer=rng.choice(near), reported_at=reported))
    return events, targets


def _build(url: str, events: list[dict[str, Any]]) -> Any:
    from exchange.store import Delivery, connect, ingest, migrate

    database = connect(url)
    migrate(database)
    for start in range(0, len(events), 2000):
        with database.begin() as conn:
            ingest(conn, [Delivery(e) for e in events[start:start + 2000]])
    return database


def _orders(book: Any, events: list[dict[str, Any]], patient: str) -> tuple[dict[str, Any], list[str]]:
    """The draft-order Bundle of a patient (the items it has most results of, in LOINC, and one unknown code)
    and the unified items ordered."""
    counts = Counter(o["item"]["unified_code"] for e in events if e["patient"]["pseudonym"] == patient
                     for o in e["observations"] if o["item"]["unified_code"])
    items = [c for c, _ in counts.most_common() if book.items[c].loinc][:DRAFT_ORDERS]
    entries = [{"resource": {"resourceType": "ServiceRequest", "id": f"sr-{n}", "status": "draft",
                             "intent": "proposal", "subject": {"reference": f"Patient/{patient}"},
                             "code": {"coding": [{"system": "http://loinc.org", "code": book.items[c].loinc}]}}}
               for n, c in enumerate(items)]
    entries.append({"resource": {"resourceType": "ServiceRequest", "id": "sr-unknown", "status": "draft",
                                 "intent": "proposal", "code": {"coding": [{"system": "urn:example", "code": "X"}]}}})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}, items


def measure(url: str, events: list[dict[str, Any]], targets: dict[int, list[str]], requests: dict[int, int]
            ) -> dict[str, Any]:
    import psycopg
    from fastapi.testclient import TestClient

    from adapters.pseudonymize import Pseudonymizer
    from adapters.publish import Publisher
    from codes import load_codebook
    from exchange.api import Context, create_app

    book = load_codebook()
    database = _build(url, events)
    context = Context(book=book, database=database, pseudonymizer=Pseudonymizer(PSEUDONYM_KEY.encode()),
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="bench",
                      ui_base_url="https://hrx.example.cn/ui")
    open_encounters(database, [p for ps in targets.values() for p in ps], REQUESTER)
    client = TestClient(create_app(context), headers=Clients(database).his(REQUESTER))
    client.__enter__()  # the app's lifespan, as uvicorn runs it
    floor_conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    floor_sql = ("SELECT r.* FROM result_heads h JOIN results r ON r.id = h.result_pk WHERE h.patient = %s "
                 "ORDER BY h.reported_at DESC, r.id DESC")
    orders = {p: _orders(book, events, p) for ps in targets.values() for p in ps}

    def hook(p: str) -> Any:
        return client.post(f"/cds-services/{SERVICE}", json={
            "hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/bench-clinician", "patientId": p, "draftOrders": orders[p][0]}})

    def check(p: str) -> Any:
        return client.post("/api/v1/recognition/check", json={
            "patient": {"pseudonym": p}, "requesting_institution": REQUESTER, "items": orders[p][1]})

    out: dict[str, Any] = {}
    try:
        for history, patients in targets.items():
            for p in patients[:2]:  # warm-up: plans, caches, code book
                hook(p).raise_for_status()
                check(p).raise_for_status()
                floor_conn.execute(floor_sql, (p,)).fetchall()
            ours, floor, json_check, cards = [], [], [], []
            for k in range(requests[history]):
                p = patients[k % len(patients)]
                t0 = time.perf_counter()
                rows = floor_conn.execute(floor_sql, (p,)).fetchall()
                t1 = time.perf_counter()
                answered = hook(p)
                t2 = time.perf_counter()
                checked = check(p)
                t3 = time.perf_counter()
                assert answered.status_code == 200, answered.text
                assert checked.status_code == 200, checked.text
                assert len(rows) == history, (len(rows), history)
                cards.append(len(answered.json()["cards"]))
                floor.append(t1 - t0)
                ours.append(t2 - t1)
                json_check.append(t3 - t2)
            f_ours, f_floor, f_check = summary_ms(ours), summary_ms(floor), summary_ms(json_check)
            out[str(history)] = {"order_sign": f_ours, "floor_select": f_floor, "json_check": f_check,
                                 "draft_orders": DRAFT_ORDERS + 1, "cards_mean": round(sum(cards) / len(cards), 2),
                                 "ratio_floor_p50": ratio(f_ours["p50_ms"], f_floor["p50_ms"]),
                                 "ratio_floor_p99": ratio(f_ours["p99_ms"], f_floor["p99_ms"]),
                                 "ratio_check_p99": ratio(f_ours["p99_ms"], f_check["p99_ms"])}
    finally:
        floor_conn.close()
        client.__exit__(None, None, None)
        database.dispose()
    return out


def run(quick: bool = False, small: bool = False) -> Outcome:
    out = Outcome("cds_hooks", "CDS Hooks order-sign latency (PostgreSQL) vs the check's floor and the JSON check")
    if small:
        size, histories, requests = 3_000, {50: 2, 500: 2}, {50: 20, 500: 10}
    elif quick:
        size, histories, requests = 20_000, {50: 3, 500: 3}, {50: 60, 500: 30}
    else:
        size, histories, requests = 100_000, {50: 10, 500: 10}, {50: 300, 500: 200}
    out.sizes = {"store": size, "patients_per_history": {str(k): v for k, v in histories.items()},
                 "requests_per_history": {str(k): v for k, v in requests.items()}, "requester": REQUESTER,
                 "reported_within_days": RECENT.days, "draft_orders": DRAFT_ORDERS + 1}
    now = datetime.now(UTC)
    events, targets = _events(size, histories, now)
    with fresh_pg(f"hrx_bench_cds_{SEED}") as url:
        started = time.perf_counter()
        figures = measure(url, events, targets, requests)
        out.figures["seconds_incl_build"] = round(time.perf_counter() - started, 1)
    out.figures.update(figures)
    for history, f in figures.items():
        say(f"cds_hooks: store {size:,} history {int(history):>4}: order-sign p50 {f['order_sign']['p50_ms']:.2f} "
            f"p99 {f['order_sign']['p99_ms']:.2f} ms | floor p50 {f['floor_select']['p50_ms']:.2f} p99 "
            f"{f['floor_select']['p99_ms']:.2f} ms (×{f['ratio_floor_p99']} p99) | JSON check p99 "
            f"{f['json_check']['p99_ms']:.2f} ms (×{f['ratio_check_p99']}) | cards {f['cards_mean']}")
        out.ratios[f"{history}_order_sign_vs_floor_p99"] = f["ratio_floor_p99"]
        out.ratios[f"{history}_order_sign_vs_check_p99"] = f["ratio_check_p99"]
    if "500" in figures:
        out.goals["order_sign_p99_le_100ms_at_500"] = figures["500"]["order_sign"]["p99_ms"] <= 100
    if small or quick:
        out.notes.append(f"{'small' if small else 'quick'} mode: store of {size:,}, few requests; not for the goal")
    return out


if __name__ == "__main__":
    import sys

    result = run(quick="--quick" in sys.argv, small="--small" in sys.argv)
    print(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())

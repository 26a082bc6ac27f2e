"""9. FHIR search latency: ``GET /fhir/DiagnosticReport?patient=…&_include=DiagnosticReport:result`` for a patient
with 500 current lab results (PostgreSQL, the recognition benchmark's store: 100k quick, 1M full), against the
floor of one indexed SELECT of the same rows (heads ⋈ results ⋈ observations).

Timed: the real route through FastAPI's TestClient as the requester's HIS (authentication, the treatment
relationship, the search and its count in SQL, the recognition extension of every report and value, the R4B
validation of the Bundle, the audit record), one page of ``_count=500``; then the same search with the answer
not validated (``HRX_FHIR_VALIDATE=0``), and ``Bundle.model_validate`` of the same answer alone. The data set
is the recognition benchmark's (``bench/recognition.py``: same seed, targets and layout), reused when it is there.
"""
from __future__ import annotations

import time
from typing import Any

import orjson

from bench.access import Clients, open_encounters
from bench.common import Outcome, ratio, say, summary_ms
from bench.recognition import REQUESTER, ensure_dataset, targets

HISTORY = 500
FLOOR_SQL = ("SELECT r.*, o.* FROM result_heads h JOIN results r ON r.id = h.result_pk "
             "LEFT JOIN observations o ON o.result_pk = r.id WHERE h.patient = %s "
             "ORDER BY h.reported_at DESC, h.issuer DESC, h.result_id DESC, o.seq")


def measure(url: str, patients: list[str], requests: int) -> dict[str, Any]:
    import psycopg
    from fastapi.testclient import TestClient
    from fhir.resources.R4B.bundle import Bundle

    from adapters.pseudonymize import Pseudonymizer
    from adapters.publish import Publisher
    from codes import load_codebook
    from exchange.api import Context, create_app
    from exchange.store import connect

    database = connect(url)
    context = Context(book=load_codebook(), database=database, pseudonymizer=Pseudonymizer(b"hrx-bench-key-0123456789"),
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="bench")
    open_encounters(database, patients, REQUESTER)
    client = TestClient(create_app(context), headers=Clients(database).his(REQUESTER))
    client.__enter__()
    floor_conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def search(p: str) -> Any:
        return client.get("/fhir/DiagnosticReport", params={"patient": p, "_include": "DiagnosticReport:result",
                                                            "_count": str(HISTORY)})
    try:
        for p in patients[:2]:  # warm-up: plans, caches, the code book, the models
            search(p).raise_for_status()
            floor_conn.execute(FLOOR_SQL, (p,)).fetchall()
        api, unvalidated, floor, validation = [], [], [], []
        included = 0
        for k in range(requests):
            p = patients[k % len(patients)]
            t0 = time.perf_counter()
            rows = floor_conn.execute(FLOOR_SQL, (p,)).fetchall()
            t1 = time.perf_counter()
            response = search(p)
            t2 = time.perf_counter()
            assert response.status_code == 200, response.text
            bundle = orjson.loads(response.content)
            matches = sum(1 for e in bundle["entry"] if e["search"]["mode"] == "match")
            included = sum(1 for e in bundle["entry"] if e["search"]["mode"] == "include")
            assert bundle["total"] == matches == HISTORY and included == len(rows), (bundle["total"], len(rows))
            t3 = time.perf_counter()
            Bundle.model_validate(bundle)
            validation.append(time.perf_counter() - t3)
            context.fhir_validate = False  # the same search, its answer not validated (HRX_FHIR_VALIDATE=0)
            t4 = time.perf_counter()
            assert search(p).status_code == 200
            unvalidated.append(time.perf_counter() - t4)
            context.fhir_validate = True
            floor.append(t1 - t0)
            api.append(t2 - t1)
    finally:
        floor_conn.close()
        client.__exit__(None, None, None)
        database.dispose()
    return {"search": summary_ms(api), "search_unvalidated": summary_ms(unvalidated),
            "floor_select": summary_ms(floor), "r4b_validation": summary_ms(validation),
            "ratio_unvalidated_p99": ratio(summary_ms(unvalidated)["p99_ms"], summary_ms(floor)["p99_ms"]),
            "included_observations": included,
            "ratio_p50": ratio(summary_ms(api)["p50_ms"], summary_ms(floor)["p50_ms"]),
            "ratio_p99": ratio(summary_ms(api)["p99_ms"], summary_ms(floor)["p99_ms"])}


def run(quick: bool = False, size: int | None = None, requests: int | None = None) -> Outcome:
    """``size`` and ``requests`` override the mode's (a small store proves the script, it measures nothing)."""
    out = Outcome("fhir_search", "FHIR DiagnosticReport search with _include at 500 results vs the indexed SELECT")
    # The recognition benchmark's targets, so that both share (and neither rebuilds) the data set.
    per_history = {50: 5, 500: 5, 5000: 1} if quick else {50: 10, 500: 10, 5000: 3}
    size = size or (100_000 if quick else 1_000_000)
    requests = requests or (30 if quick else 60)  # a validated 500-report answer takes seconds: 60 keep it minutes
    target_map = targets((50, 500, 5000), per_history)
    out.sizes = {"store": size, "history": HISTORY, "patients": len(target_map[HISTORY]), "requests": requests,
                 "requester": REQUESTER, "page": HISTORY}
    url, built = ensure_dataset(size, target_map)
    if built is not None:
        out.figures["build_s"] = round(built)
    figures = measure(url, target_map[HISTORY], requests)
    out.figures[str(size)] = figures
    say(f"fhir_search: store {size:,} history {HISTORY}: search p50 {figures['search']['p50_ms']:.1f} ms p99 "
        f"{figures['search']['p99_ms']:.1f} ms | floor p50 {figures['floor_select']['p50_ms']:.2f} p99 "
        f"{figures['floor_select']['p99_ms']:.2f} ms | ×{figures['ratio_p99']} (p99) | unvalidated p50 "
        f"{figures['search_unvalidated']['p50_ms']:.1f} p99 {figures['search_unvalidated']['p99_ms']:.1f} ms "
        f"(×{figures['ratio_unvalidated_p99']}) | R4B validation p50 "
        f"{figures['r4b_validation']['p50_ms']:.1f} ms | {figures['included_observations']} observations included")
    out.ratios[f"{size}_{HISTORY}_search_vs_floor_p99"] = figures["ratio_p99"]
    out.ratios[f"{size}_{HISTORY}_unvalidated_search_vs_floor_p99"] = figures["ratio_unvalidated_p99"]
    if size < 1_000_000:
        out.notes.append(f"store of {size:,} results, not 1M: the figures do not judge the goal")
    return out

"""9. The clinician's encounter view in a real browser: time from the HIS opening a launch link until the view is
interactive, for patients with 500 prior results, next to the API check's own time for the same patients.

Data: the recognition benchmark's data set (``hrx_bench_100k`` / ``hrx_bench_1m``, built by bench/recognition.py
and reused). Served by a real uvicorn on a loopback port (the app ``hrx serve`` runs), the HIS's launch token
redeemed by the page, Debian's Chromium driven by Playwright (``/usr/bin/chromium``, 1366×768), every request
beyond 127.0.0.1 blocked. Timed per patient: (a) ``page.goto(launch url)`` until ``body[data-ready=true]``, as
Playwright sees it (the page, the token's redemption, the check, the institutions' names and the rendering);
(b) the same inside the browser, from the navigation start to the page's ``hrx-encounter-ready`` performance mark;
(c) the same check through the API (httpx, same server). The first patient warms the browser's caches and the
server and is not counted. Goal: (a) ≤ 1 s at 500 results in the 1 M store.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from bench.common import Outcome, ratio, say, summary_ms
from bench.recognition import REQUESTER, ensure_dataset, targets

CHROMIUM = "/usr/bin/chromium"
CLINICIAN = "bench-clinician"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(url: str, patients: list[str]) -> dict[str, Any]:
    import httpx
    import uvicorn
    from playwright.sync_api import sync_playwright

    from adapters.pseudonymize import Pseudonymizer
    from adapters.publish import Publisher
    from bench.access import Clients, open_encounters
    from bench.recognition import _reset_writes
    from codes import load_codebook
    from exchange.api import Context, create_app
    from exchange.auth import accounts
    from exchange.store import connect

    _reset_writes(url)
    database = connect(url)
    # _reset_writes emptied every table but the data set's: the clinician's account is made anew each run
    accounts.add_user(database, CLINICIAN, "clinician", "Bench clinician", "bench-password-0123456789",
                      institution=REQUESTER)
    open_encounters(database, patients, REQUESTER)
    his = Clients(database).his(REQUESTER, CLINICIAN)
    context = Context(book=load_codebook(), database=database, pseudonymizer=Pseudonymizer(b"hrx-bench-key-0123456789"),
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="bench")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(context), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, name="bench-ui-api", daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    launch_to_ready, page_only, api_check, entries, blocked = [], [], [], [], []
    try:
        with httpx.Client(base_url=base, timeout=60) as client, sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
            context_ = browser.new_context(viewport={"width": 1366, "height": 768})

            def only_loopback(route: Any) -> None:
                if urlsplit(route.request.url).hostname != "127.0.0.1":
                    blocked.append(route.request.url)
                    route.abort()
                else:
                    route.continue_()

            context_.route("**/*", only_loopback)
            page = context_.new_page()
            for n, patient in enumerate(patients):
                encounter = f"BENCH-UI-{n}"
                launched = client.post("/api/v1/launch", headers=his, json={
                    "patient": {"pseudonym": patient}, "encounter_id": encounter})
                launched.raise_for_status()
                t0 = time.perf_counter()
                page.goto(base + launched.json()["url"])
                page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60_000)
                t1 = time.perf_counter()
                mark = page.evaluate("() => performance.getEntriesByName('hrx-encounter-ready')[0].startTime")
                rows = page.locator("#reminder tbody tr").count()
                t2 = time.perf_counter()
                answer = client.post("/api/v1/recognition/check", headers=his, json={
                    "patient": {"pseudonym": patient}, "requesting_institution": REQUESTER, "encounter_id": encounter})
                t3 = time.perf_counter()
                answer.raise_for_status()
                assert rows == len(answer.json()["results"]), (rows, len(answer.json()["results"]))
                if n == 0:
                    continue  # warm-up
                launch_to_ready.append(t1 - t0)
                page_only.append(mark / 1000)
                api_check.append(t3 - t2)
                entries.append(rows)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
        database.dispose()
    return {"launch_to_interactive": summary_ms(launch_to_ready), "clinician_page_to_interactive": summary_ms(page_only),
            "api_check": summary_ms(api_check), "entries_shown": entries[:1] and entries[0],
            "ratio_p50": ratio(summary_ms(launch_to_ready)["p50_ms"], summary_ms(api_check)["p50_ms"]),
            "requests_beyond_loopback": len(blocked)}


def run(quick: bool = False) -> Outcome:
    out = Outcome("ui", "Clinician's encounter view in Chromium: launch link to interactive, 500 prior results")
    size = 100_000 if quick else 1_000_000
    per_history = {50: 5, 500: 5, 5000: 1} if quick else {50: 10, 500: 10, 5000: 3}
    target_map = targets((50, 500, 5000), per_history)  # the recognition benchmark's data set, reused
    url, built = ensure_dataset(size, target_map)
    if built is not None:
        out.figures["build_s"] = round(built)
    patients = target_map[500]
    out.sizes = {"store": size, "history": 500, "patients": len(patients) - 1, "warm_up": 1,
                 "viewport": "1366x768", "browser": CHROMIUM}
    figures = measure(url, patients)
    out.figures.update(figures)
    say(f"ui: store {size:,}, 500 results: launch → interactive p50 {figures['launch_to_interactive']['p50_ms']:.0f} ms "
        f"p95 {figures['launch_to_interactive']['p95_ms']:.0f} ms; clinician page alone p50 "
        f"{figures['clinician_page_to_interactive']['p50_ms']:.0f} ms; API check p50 {figures['api_check']['p50_ms']:.0f} ms; "
        f"{figures['entries_shown']} entries shown")
    out.ratios["launch_to_interactive_vs_api_check_p50"] = figures["ratio_p50"]
    out.goals[f"launch_to_interactive_p95_le_1s_at_500_in_{size}"] = figures["launch_to_interactive"]["p95_ms"] <= 1000
    out.goals["offline_clean"] = figures["requests_beyond_loopback"] == 0
    if quick:
        out.notes.append("quick mode: the goal is judged on the 100 k store, not 1 M")
    return out


if __name__ == "__main__":
    import sys

    import orjson

    result = run(quick="--quick" in sys.argv)
    print(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())

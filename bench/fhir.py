"""6. FHIR ingest: Bundles/s through the real ``POST /fhir`` (parse with fhir.resources, map, pseudonymize,
validate, publish, wait for the Kafka acknowledgement) against fhir.resources parse-only of the same Bundles.

Both run sequentially in this process on the same Bundles (one DiagnosticReport with 1–3 Observations each, from
code-book institutions). POST /fhir goes through FastAPI's TestClient (in-process ASGI, no sockets) to an
embedded tansu broker; the baseline is ``Bundle.model_validate`` on the decoded JSON.
"""
from __future__ import annotations

import random
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.access import Clients, issuer_of
from bench.common import Outcome, ratio, say, summary_ms
from bench.data import EPOCH, lab_codes


def bundles(n: int, seed: int = 66) -> list[dict[str, Any]]:
    from exchange.demo import lab_bundle
    from schemas.resident_id import make_resident_id

    rng = random.Random(seed)
    table = lab_codes()
    out = []
    for i in range(n):
        issuer = rng.choice(sorted(table))
        picked = rng.sample(table[issuer], k=min(len(table[issuer]), rng.choice((1, 2, 3))))
        observations = [{"code": local, "value": round(rng.uniform(1, 100), 2), "unit": unit, "low": 1.0,
                         "high": 100.0, "flag": "N"} for local, _, unit in picked]
        resident = make_resident_id(f"11010519{rng.randrange(50, 99)}0{rng.randrange(1, 9)}1{rng.randrange(0, 9)}"
                                    f"{rng.randrange(100, 999)}")
        out.append(lab_bundle(resident_id=resident, institution=issuer, report_id=f"FHIR{seed}-{i:08d}",
                              code=picked[0][0], display=None, observations=observations,
                              issued=EPOCH - timedelta(minutes=rng.randrange(0, 10_000)), version=1))
    return out


def run(quick: bool = False, n: int | None = None) -> Outcome:
    from fastapi.testclient import TestClient
    from fhir.resources.R4B.bundle import Bundle

    from codes import load_codebook
    from exchange.api import Context, create_app
    from exchange.broker import EmbeddedBroker, ensure_topics
    from schemas.topics import DEFAULT_PARTITIONS
    from adapters.pseudonymize import Pseudonymizer
    from adapters.publish import Publisher
    from exchange.store import connect, migrate

    n = n or (200 if quick else 2000)
    out = Outcome("fhir", "FHIR ingest: Bundles/s through POST /fhir vs fhir.resources parse-only")
    data = bundles(n)
    bodies = [orjson.dumps(b) for b in data]
    out.sizes = {"bundles": n, "reports_per_bundle": 1, "observations": sum(len(b["entry"]) - 3 for b in data),
                 "avg_bundle_bytes": round(sum(map(len, bodies)) / n)}
    started = time.perf_counter()
    for body in bodies:
        Bundle.model_validate(orjson.loads(body))
    base_s = time.perf_counter() - started
    tmp = Path(tempfile.mkdtemp(prefix="hrx-bench-fhir-"))
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, DEFAULT_PARTITIONS)
        database = connect(f"sqlite:///{tmp / 'hrx.db'}")
        migrate(database)
        publisher = Publisher(broker.bootstrap)
        context = Context(book=load_codebook(), database=database,
                          pseudonymizer=Pseudonymizer(b"hrx-bench-key-0123456789"), publisher=publisher,
                          bootstrap=broker.bootstrap, engine_group="bench")
        clients = Clients(database)
        headers = [{"Content-Type": "application/fhir+json", **clients.source(issuer_of(orjson.loads(body)))}
                   for body in bodies]
        with TestClient(create_app(context)) as client:
            for body, sent in list(zip(bodies, headers))[:5]:  # warm-up: producer, caches (resent: idempotent)
                client.post("/fhir", content=body, headers=sent).raise_for_status()
            latencies = []
            started = time.perf_counter()
            for body, sent in zip(bodies, headers):
                t0 = time.perf_counter()
                response = client.post("/fhir", content=body, headers=sent)
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise RuntimeError(f"POST /fhir answered {response.status_code}: {response.text[:300]}")
            ours_s = time.perf_counter() - started
        publisher.close()
        database.dispose()
    base_rate, ours_rate = n / base_s, n / ours_s
    out.figures = {"parse_only_bundles_per_s": round(base_rate, 1), "post_fhir_bundles_per_s": round(ours_rate, 1),
                   "post_fhir_latency": summary_ms(latencies)}
    out.ratios["post_fhir_vs_parse_only"] = ratio(ours_rate, base_rate)
    say(f"fhir: parse-only {base_rate:8.1f} Bundles/s | POST /fhir {ours_rate:8.1f} Bundles/s "
        f"(p50 {out.figures['post_fhir_latency']['p50_ms']} ms) | ratio {out.ratios['post_fhir_vs_parse_only']}")
    out.notes.append("no numeric goal in the issue; the ratio shows what mapping, pseudonymizing, validating and the "
                     "acknowledged publish cost on top of parsing")
    return out


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv).as_dict())

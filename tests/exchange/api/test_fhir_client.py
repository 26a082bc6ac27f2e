"""An independent FHIR client (fhirpy, from PyPI) against a live server on a loopback port (uvicorn in a thread),
both stores: searches with the client's own query building, paging walked to the end through the server's next
links, every response validated with the fhir.resources R4B models, 403 without a treatment relationship, and
every read in the audit."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError

from adapters.pipeline import ResultPipeline
from exchange import audit
from exchange.api import Context, create_app
from tests.exchange.api.test_fhir_search import ISSUER, REQUESTER, RESIDENT_ID, STRANGER, _ct, _lab, _store
from tests.fakes import FakePublisher
from tests.fixtures.servers import app_on_loopback

pytestmark = pytest.mark.integration


@pytest.fixture
def live(book, database, pseudonymizer, principals) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    """The API served by uvicorn on a loopback port over a store with one patient's 30 results."""
    pipeline = ResultPipeline(book, pseudonymizer)
    reports = [_lab(f"R{i:02d}", [("BJXCALT", 20.0 + i, "U/L"), ("BJXCK", 4.0, "mmol/L")], hours_ago=24 + i)
               for i in range(29)]
    events = _store(database, pipeline, *reports, _ct())
    principals.encounter(events[0]["patient"]["pseudonym"], REQUESTER)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    with app_on_loopback(create_app(context)) as base:
        yield f"{base}/fhir", principals


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[requests.Response]:
    """Every response the client receives."""
    responses: list[requests.Response] = []
    real = requests.request

    def recorded(*args: Any, **kwargs: Any) -> requests.Response:
        response = real(*args, **kwargs)
        responses.append(response)
        return response

    monkeypatch.setattr(requests, "request", recorded)
    return responses


def _client(url: str, headers: dict[str, str]) -> SyncFHIRClient:
    return SyncFHIRClient(url, authorization=headers["Authorization"],
                          extra_headers={k: v for k, v in headers.items() if k != "Authorization"})


def test_fhirpy_searches_pages_and_reads_a_live_server(live, seen, database) -> None:  # type: ignore[no-untyped-def]
    url, principals = live
    client = _client(url, principals.his(REQUESTER))
    [patient] = client.resources("Patient").search(
        identifier=f"urn:oid:2.16.156.10011.1.3|{RESIDENT_ID}").fetch()
    pseudonym = patient.id
    reports = client.resources("DiagnosticReport").search(patient=pseudonym).include(
        "DiagnosticReport", "result").limit(7).fetch_all()
    assert len(reports) == 30 and len({r.id for r in reports}) == 30  # 5 pages walked through the next links
    pages = [r for r in seen if "DiagnosticReport?" in r.url]
    assert len(pages) == 5 and all(r.json()["total"] == 30 for r in pages)
    assert sum(1 for r in pages for e in r.json().get("entry", ()) if e["search"]["mode"] == "include") == 58
    alt = client.resources("Observation").search(patient=pseudonym, code="urn:hrx:item|L0001").sort("-date")
    values = alt.fetch_all()
    assert len(values) == 29 and values[0].valueQuantity.value == 20.0  # the newest first
    assert client.resources("Observation").search(patient=pseudonym).search(
        **{"value-quantity": "ge45"}).count() == 4
    [study] = client.resources("ImagingStudy").search(patient=pseudonym, modality="CT").fetch()
    assert study.contained[0].resourceType == "Endpoint"
    report = client.reference("DiagnosticReport", reports[0].id).to_resource()
    assert report.meta.versionId == "1" and report.performer[0].reference == f"Organization/{ISSUER}"
    capability = client.execute("metadata", method="get")
    assert capability["resourceType"] == "CapabilityStatement"
    for response in seen:  # every answer is a valid FHIR R4B resource
        body = response.json()
        get_fhir_model_class(body["resourceType"]).model_validate(body)

    stranger = _client(url, principals.his(STRANGER, "dr-x"))
    with pytest.raises(ForbiddenError) as refused:
        stranger.resources("DiagnosticReport").search(patient=pseudonym).fetch()
    assert seen[-1].status_code == 403 and "forbidden" in str(refused.value)
    with database.connect() as conn:
        trail = audit.trail(conn, pseudonym, limit=100)
    reads = [r for r in trail if r["action"].startswith("fhir.")]
    assert len(reads) == 1 + 5 + 1 + 1 + 1 + 1  # resolve, 5 pages, values, the count, the study, the read
    assert all(r["institution"] == REQUESTER and r["on_behalf_of"] == "dr-wang" for r in reads)

"""POST /fhir as a door: bounded in what it reads and answers, refusing conflicts with the store (409), and the
specification's examples end to end (POST /fhir → Kafka → engine → store)."""
from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from adapters.fhir import build_events
from adapters.pipeline import ResultPipeline
from adapters.publish import Publisher
from exchange.api import Context, create_app
from exchange.store import connect, migrate
from exchange.store.models import Observation, Result
from tests.adapters.fhir_examples import INSTITUTION, example, localise, reports
from tests.fixtures.principals import Principals
from tests.fixtures.waiting import wait_for
from tests.exchange.test_conflicts import stored

# The door answers 503 by reaching for a broker that is not there: a socket.
pytestmark = pytest.mark.integration

FHIR = {"Content-Type": "application/fhir+json"}
LIMIT = 256 * 1024


class CountingApp:
    """The ASGI app, counting the body bytes it pulled from the server."""

    def __init__(self, app: Any) -> None:
        self.app, self.read = app, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def counted() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                self.read += len(message.get("body", b""))
            return message  # type: ignore[no-any-return]

        await self.app(scope, counted, send)

    def __getattr__(self, name: str) -> Any:  # the rest (e.g. ``openapi()``) is the app's
        return getattr(self.app, name)


@pytest.fixture
def door(book, pseudonymizer, tmp_path) -> Iterator[tuple[TestClient, CountingApp]]:  # type: ignore[no-untyped-def]
    """The API on a SQLite store and an unreachable broker, with a small body bound."""
    database = connect(f"sqlite:///{tmp_path / 'hrx.db'}")
    migrate(database)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=Publisher("127.0.0.1:9"),
                      bootstrap="127.0.0.1:9", engine_group="hrx-engine", fhir_max_bytes=LIMIT)
    app = CountingApp(create_app(context))
    source = Principals(database).source(INSTITUTION)
    app.authorization = source["Authorization"]  # type: ignore[attr-defined]
    with TestClient(app, headers=source) as client:
        yield client, app
    database.dispose()


def _padded_bundle(size: int) -> bytes:
    """A well-formed Bundle of more than ``size`` bytes (padded in the report's conclusion)."""
    bundle = localise(example("Bundle-101"))
    reports(bundle)[0]["conclusion"] = "x" * size
    return json.dumps(bundle).encode()


def test_a_body_over_the_bound_is_refused_by_its_content_length_unread(door) -> None:  # type: ignore[no-untyped-def]
    client, app = door
    body = _padded_bundle(4 * LIMIT)
    response = client.post("/fhir", content=body, headers=FHIR)
    assert response.status_code == 413, response.text
    [issue] = response.json()["issue"]
    assert issue["code"] == "too-costly" and issue["expression"] == ["Bundle"]
    assert str(LIMIT) in issue["diagnostics"]
    assert app.read == 0  # not a byte of the body was read
    small = client.post("/fhir", content=json.dumps(localise(example("Bundle-101"))), headers=FHIR)
    assert small.status_code == 503 and app.read > 0  # under the bound: read, parsed, then the broker is away


def _chunked_post(app: Any, chunk: bytes, chunks: int, authorization: str) -> tuple[int, int, int]:
    """Drive the ASGI app as a server does for a chunked request (no Content-Length): the status answered,
    the body bytes the app pulled, and the peak of memory allocated meanwhile."""
    pulled = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled >= chunks * len(chunk):
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/fhir", "raw_path": b"/fhir", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/fhir+json"),
                         (b"transfer-encoding", b"chunked"), (b"authorization", authorization.encode())],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    tracemalloc.start()
    try:
        asyncio.run(app(scope, receive, send))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return status, pulled, peak


def test_a_chunked_body_over_the_bound_is_refused_after_the_bound(door) -> None:  # type: ignore[no-untyped-def]
    client, app = door
    chunk = b" " * (64 * 1024)  # whitespace: valid JSON padding, whatever came before
    status, pulled, peak = _chunked_post(app.app, chunk, chunks=128, authorization=app.authorization)  # 8 MiB offered
    assert status == 413
    assert pulled <= LIMIT + len(chunk)
    assert peak < 4 * LIMIT  # the API's memory grew by the bound, not by the 8 MiB body


def test_error_answers_are_bounded(door) -> None:  # type: ignore[no-untyped-def]
    client, _ = door
    bundle = localise(example("Bundle-101"))
    reports(bundle)[0]["status"] = "x" * (100 * 1024)
    response = client.post("/fhir", content=json.dumps(bundle), headers=FHIR)
    assert response.status_code == 422 and len(response.content) < 5000
    assert "more characters" in response.json()["issue"][0]["diagnostics"]
    broken = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Observation"}} for _ in range(1000)]}
    response = client.post("/fhir", content=json.dumps(broken), headers=FHIR)
    issues = response.json()["issue"]
    assert response.status_code == 400 and len(issues) == 101 and len(response.content) < 30_000
    assert issues[0]["expression"] == ["Bundle.entry.0.resource.code"]
    assert issues[-1] == {"severity": "information", "code": "informational",
                          "diagnostics": "900 more issue(s) not shown"}


@pytest.fixture
def api(book, database, broker, pseudonymizer, principals) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The API alone (no engine consuming) on both stores, called by the examples' issuer's source client."""
    publisher = Publisher(broker.bootstrap, timeout_s=3)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=publisher,
                      bootstrap=broker.bootstrap, engine_group="hrx-engine")
    with TestClient(create_app(context), headers=principals.source(INSTITUTION)) as test_client:
        yield test_client
    publisher.close()


def _cbc(status: str = "final", version_id: str | None = None) -> dict[str, Any]:
    bundle = localise(example("Bundle-101"))
    report = reports(bundle)[0]
    report["status"] = status
    if version_id:
        report["meta"] = {"versionId": version_id}
    return bundle


def test_conflicts_with_the_store_are_refused_with_409(api, database, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    pipeline = ResultPipeline(book, pseudonymizer)
    [cbc] = build_events(pipeline, _cbc())
    stored(database, cbc.event)
    # Bundle-lipids carries Bundle-101's identifier, version and issuer: not a resend.
    response = api.post("/fhir", content=json.dumps(localise(example("Bundle-lipids"))), headers=FHIR)
    assert response.status_code == 409, response.text
    [issue] = response.json()["issue"]
    assert issue["code"] == "conflict" and "already stored with different content" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[0].resource.identifier", "Bundle.entry[0].resource.meta.versionId"]
    # The same report again is a resend: 200, answered as already there.
    response = api.post("/fhir", content=json.dumps(_cbc()), headers=FHIR)
    assert response.status_code == 200
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["200 OK"]
    assert response.json()["entry"][0]["response"]["location"] == (
        "DiagnosticReport/bj-xicheng-001/http%3A%2F%2Facme.com%2Flab%2Freports%7C5234342/_history/2")


def test_a_correction_without_version_under_a_higher_one_is_refused(api, database, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    pipeline = ResultPipeline(book, pseudonymizer)
    [v5] = build_events(pipeline, _cbc("amended", "5"))
    stored(database, v5.event)
    response = api.post("/fhir", content=json.dumps(_cbc("corrected")), headers=FHIR)
    assert response.status_code == 409
    assert "send meta.versionId greater than 5" in response.json()["issue"][0]["diagnostics"]
    response = api.post("/fhir", content=json.dumps(_cbc("corrected", "6")), headers=FHIR)
    assert response.status_code == 200 and response.json()["entry"][0]["response"]["status"] == "201 Created"


def _count(database, model: Any) -> int:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_published_examples_through_the_api(api, engine_thread, database) -> None:  # type: ignore[no-untyped-def]
    api.app.state.context.engine_group = engine_thread.group

    def post(bundle: dict[str, Any]) -> Any:
        return api.post("/fhir", content=json.dumps(bundle), headers=FHIR)

    assert post(localise(example("Bundle-101"))).status_code == 200
    wait_for(lambda: _count(database, Result) == 1)
    lipids = post(localise(example("Bundle-lipids")))
    assert lipids.status_code == 409 and lipids.json()["issue"][0]["code"] == "conflict"
    ghp = localise(example("Bundle-ghp"))
    assert post(ghp).status_code == 200
    assert post(localise(example("DiagnosticReport-f201"), identifier="f201")).status_code == 200
    wait_for(lambda: _count(database, Result) == 3)
    with database.connect() as conn:
        kinds = dict(conn.execute(select(Result.result_id, Result.kind)).all())
    assert kinds == {"http://acme.com/lab/reports|5234342": "lab", "http://acme.com/lab/reports|ghp-example": "lab",
                     "urn:example:localised|f201": "imaging"}
    assert _count(database, Observation) == 17 + 51  # every panel member of Bundle-ghp is stored
    resend = post(ghp)
    assert resend.status_code == 200 and resend.json()["entry"][0]["response"]["status"] == "200 OK"


def test_the_bound_is_a_setting() -> None:
    from exchange.config import FHIR_MAX_BYTES, Settings

    assert Settings.from_env({}).fhir_max_bytes == FHIR_MAX_BYTES == 8 * 1024 * 1024
    settings = Settings.from_env({"HRX_FHIR_MAX_BYTES": "1048576"})
    assert settings.fhir_max_bytes == 1048576 and settings.to_env()["HRX_FHIR_MAX_BYTES"] == "1048576"
    for wrong in ("8MB", "0", "-1"):
        with pytest.raises(ValueError, match="HRX_FHIR_MAX_BYTES"):
            Settings.from_env({"HRX_FHIR_MAX_BYTES": wrong})


def test_a_store_that_cannot_be_read_means_503(book, pseudonymizer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    unmigrated = connect(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables: every read fails
    context = Context(book=book, database=unmigrated, pseudonymizer=pseudonymizer,
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="hrx-engine")
    with TestClient(create_app(context)) as client:
        response = client.post("/fhir", content=json.dumps(localise(example("Bundle-101"))),
                               headers={**FHIR, "Authorization": "Bearer any"})  # checking it reads the store
    assert response.status_code == 503 and response.json()["issue"][0]["code"] == "transient"
    assert "store is unavailable" in response.json()["issue"][0]["diagnostics"]
    unmigrated.dispose()

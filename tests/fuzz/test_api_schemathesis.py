"""Schemathesis against the API's own ``/openapi.json``: for every operation, requests generated from the
declared parameters and bodies (``max_examples`` per operation) must never get a 5xx, and every answer must
be one the document declares — its status, its media type, a body matching its schema.

The app is the real one: the shipped code book, a migrated SQLite store and a Publisher to an embedded
tansu broker. Each operation is called as the principal it is for (:func:`caller`), so that generated requests
get past authentication into the route. ``README.md`` ("Fuzzing") shows the longer run from the command line.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from adapters.pseudonymize import Pseudonymizer
from adapters.publish import Publisher
from codes import CodeBook
from exchange.api import Context, create_app
from exchange.broker import EmbeddedBroker, ensure_topics
from schemas.topics import DEFAULT_PARTITIONS
from exchange.auth.patient_codes import FileSender
from tests.fixtures.principals import Principals
from tests.fixtures.pseudonyms import TEST_KEY

MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

pytestmark = pytest.mark.integration  # a tansu broker for the module


REQUESTER, ISSUER = "bj-chaoyang-001", "bj-xicheng-001"
OPERATOR_PATHS = ("/api/v1/stats/", "/api/v1/mappings", "/api/v1/jobs/", "/api/v1/dead-letters",
                  "/api/v1/catalogues/import")


def caller(path: str, method: str, who: Principals) -> dict[str, str]:
    """The headers of the principal an operation is for."""
    if path == "/fhir":
        return who.source(ISSUER)
    if path.startswith("/api/v1/me/"):
        return who.patient("a" * 64)
    if path in ("/api/v1/stats", "/api/v1/unmapped-codes") or (path == "/api/v1/feedback" and method == "GET"):
        return who.operator()
    if path.startswith(OPERATOR_PATHS) or path.endswith("/diff"):
        return who.operator()
    if path == "/api/v1/audit":
        return who.auditor()
    if path.startswith("/api/v1/break-glass"):
        return who.clinician(REQUESTER)
    return who.his(REQUESTER)


@pytest.fixture(scope="module")
def api(book: CodeBook, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    from exchange.store import connect, migrate

    work: Path = tmp_path_factory.mktemp("schemathesis")
    database = connect(f"sqlite:///{work / 'hrx.db'}")
    migrate(database)
    Principals(database).encounter("a" * 64, REQUESTER)
    with EmbeddedBroker(log_path=work / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, DEFAULT_PARTITIONS)
        publisher = Publisher(broker.bootstrap, timeout_s=3)
        app = create_app(Context(book=book, database=database, pseudonymizer=Pseudonymizer(TEST_KEY),
                                 publisher=publisher, bootstrap=broker.bootstrap, engine_group="hrx-engine",
                                 code_sender=FileSender(work / "codes.jsonl")))
        app.state.principals = Principals(database)
        yield app
        publisher.close()
    database.dispose()


def _operation_test(operation: APIOperation, headers: dict[str, str]) -> Callable[[], None]:
    """A Hypothesis test of one operation: valid and invalid requests alike, each answer checked."""
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @given(cases)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS, headers=headers)

    return run


def test_no_server_error_and_every_answer_as_documented(api: FastAPI) -> None:
    # schemathesis's own pytest integration (schema.parametrize) does not run under pytest 9.2 (it renames
    # nodes through an attribute pytest no longer has): each operation is a Hypothesis test of its own here.
    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            _operation_test(operation, caller(operation.path, operation.method.upper(), api.state.principals))()
        except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all failures are reported
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 10, f"only {operations} operations in /openapi.json"
    assert not failures, "\n\n".join(failures)

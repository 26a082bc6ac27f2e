"""/openapi.json describes every answer of every route: each 2xx with a schema, each refusal in the shape the API
really gives (the answers themselves are checked against it in conftest.py)."""
from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.testclient import TestClient

from adapters.publish import Publisher
from exchange.api import Context, create_app
from tests.exchange.api.conftest import undocumented


@pytest.fixture(scope="module")
def app(book) -> FastAPI:  # type: ignore[no-untyped-def]
    context = Context(book=book, database=None, pseudonymizer=None,  # type: ignore[arg-type]
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="g")
    return create_app(context)


@pytest.fixture(scope="module")
def document(app) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return TestClient(app).get("/openapi.json").json()  # type: ignore[no-any-return]


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{method.upper()} {path}", op) for path, item in document["paths"].items() for method, op in item.items()]


def answers_without_schema(document: dict[str, Any]) -> list[str]:
    """Every route whose success answers are not described: no 2xx at all, or a 2xx (or 4xx) without a schema."""
    missing = []
    for name, operation in _operations(document):
        statuses = operation.get("responses", {})
        if not any(status.startswith("2") for status in statuses):
            missing.append(f"{name}: no 2xx answer declared")
        for status, declared in statuses.items():
            if status[0] not in "24":
                continue
            content = declared.get("content") or {}
            if not content or not all(media.get("schema") for media in content.values()):
                missing.append(f"{name} → {status}: no schema")
    return missing


def test_every_answer_of_every_route_has_a_schema(document) -> None:  # type: ignore[no-untyped-def]
    assert len(_operations(document)) >= 16
    assert answers_without_schema(document) == []


def test_a_route_without_a_schema_is_found() -> None:
    bare = FastAPI()

    @bare.get("/bare", response_class=Response)
    def answer() -> Response:
        return Response(b"{}", media_type="application/json")

    assert answers_without_schema(bare.openapi()) == ["GET /bare → 200: no schema"]


def _refs(schema: dict[str, Any]) -> set[str]:
    options = schema.get("anyOf", [schema])
    return {option.get("$ref", "").rpartition("/")[2] for option in options}


def test_refusals_are_described_as_the_api_gives_them(document) -> None:  # type: ignore[no-untyped-def]
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's 422 shape is not the API's
    for name, operation in _operations(document):
        for status, declared in operation["responses"].items():
            if status.startswith("2"):
                continue
            [(media, content)] = declared["content"].items()
            if name == "POST /fhir" or name.split(" ")[1].startswith("/fhir/"):  # FHIR: OperationOutcomes
                expected = {"OperationOutcome"}
            elif name == "GET /api/v1/health":
                expected = {"Health"}
            elif name == "GET /api/v1/health/ready":  # not ready: which parts are missing, not a refusal
                expected = {"Readiness"}
            else:
                expected = {"Refusal", "InvalidRequest"} if status == "422" else {"Refusal"}
            assert _refs(content["schema"]) == expected, (name, status)
    fhir = document["paths"]["/fhir"]["post"]["responses"]
    assert {media for answer in fhir.values() for media in answer["content"]} == {"application/fhir+json"}


def test_the_check_declares_its_answer(document) -> None:  # type: ignore[no-untyped-def]
    check = document["paths"]["/api/v1/recognition/check"]["post"]["responses"]
    assert _refs(check["200"]["content"]["application/json"]["schema"]) == {"CheckAnswer"}
    answer = document["components"]["schemas"]["CheckAnswer"]
    assert answer["discriminator"]["propertyName"] == "trigger"


def test_an_answer_unlike_its_declaration_is_found(app) -> None:  # type: ignore[no-untyped-def]
    request = httpx.Request("GET", "http://testserver/api/v1/reason-codes")
    assert undocumented(app, httpx.Response(200, json=[], request=request)) is None
    assert "does not match" in undocumented(app, httpx.Response(200, json=[{"code": "01"}], request=request))
    assert "not declared" in undocumented(app, httpx.Response(404, json={"error": "x", "field": None},
                                                              request=request))
    refused = httpx.Request("GET", "http://testserver/api/v1/items/ZZZ")
    assert undocumented(app, httpx.Response(404, json={"error": "code: unknown", "field": "code"},
                                            request=refused)) is None
    assert "does not match" in undocumented(app, httpx.Response(404, json={"detail": "Not Found"}, request=refused))

"""Every answer an API test receives must be one the OpenAPI document declares: its status, its media type and a
body that satisfies the declared schema. The check is made on ``TestClient.request`` for every test in this
package, so the declarations cannot drift from what the routes really answer."""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator


def _operations(app: FastAPI) -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    document = app.openapi()
    # Literal parts escaped: a path may hold regex characters (``/fhir/Observation/$lastn``).
    return [(re.compile(re.sub(r"\\\{[^}/]+\\\}", "[^/]+", re.escape(path))), method.upper(), operation)
            for path, item in document["paths"].items() for method, operation in item.items()]


def undocumented(app: FastAPI, response: httpx.Response) -> str | None:
    """Why ``response`` is not an answer the app's OpenAPI document declares, or None when it is."""
    request = response.request
    for pattern, method, operation in _operations(app):
        if method == request.method and pattern.fullmatch(request.url.path):
            break
    else:
        return None  # not an API route (/docs, /openapi.json)
    where = f"{request.method} {request.url.path} → {response.status_code}"
    declared = operation["responses"].get(str(response.status_code))
    if declared is None:
        return f"{where}: status not declared (declared: {', '.join(operation['responses'])})"
    media = response.headers.get("content-type", "").split(";")[0].strip()
    content = declared.get("content", {}).get(media)
    if content is None or not content.get("schema"):
        return f"{where}: no schema declared for {media!r}"
    if not (media == "application/json" or media.endswith("+json")):
        return None  # a download (CSV, Excel): declared with its media type, its bytes checked by its own test
    schema = {**content["schema"], "components": app.openapi()["components"]}
    if not media.endswith("json"):  # a text answer (/metrics): declared as a string, and text it is
        return None if schema.get("type") == "string" and response.text else f"{where}: not the declared text"
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
                for e in Draft202012Validator(schema).iter_errors(response.json())]
    return f"{where}: body does not match the declared schema: {'; '.join(problems[:5])}" if problems else None


@pytest.fixture(autouse=True)
def answers_as_documented(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = TestClient.request

    def checked(self: TestClient, method: str, url: Any, **kwargs: Any) -> httpx.Response:
        response = real(self, method, url, **kwargs)
        if response.status_code != 500:  # an unhandled error is a failure the test itself reports
            problem = undocumented(self.app, response)  # type: ignore[arg-type]
            assert problem is None, problem
        return response

    monkeypatch.setattr(TestClient, "request", checked)
    yield

"""A JSON body that is not even UTF-8, found by the schemathesis run (tests/fuzz/test_api_schemathesis.py): FastAPI
answered it with a bare 400 no route declares; it is refused like any other invalid JSON, 422 with the problems."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters.pseudonymize import Pseudonymizer
from codes import CodeBook
from exchange.api import Context, create_app
from exchange.store import connect
from tests.fakes import FakePublisher

NOT_UTF8 = b'{"issuer": "\xff\xfe"}'


def _client(book: CodeBook, pseudonymizer: Pseudonymizer, tmp_path: Path) -> TestClient:
    """The app with a store it never opens here and a broker it never reaches (bodies are refused first)."""
    context = Context(book=book, database=connect(f"sqlite:///{tmp_path / 'hrx.db'}"), pseudonymizer=pseudonymizer,
                      publisher=FakePublisher(), bootstrap="127.0.0.1:9",  # type: ignore[arg-type]
                      engine_group="hrx-engine")
    return TestClient(create_app(context))


@pytest.mark.parametrize("path", ["/api/v1/decisions", "/api/v1/decisions/batch", "/api/v1/feedback",
                                  "/api/v1/recognition/check"])
def test_a_json_body_that_is_not_utf8_is_refused_as_invalid_json(path: str, book: CodeBook,
                                                                  pseudonymizer: Pseudonymizer, tmp_path: Path) -> None:
    answer = _client(book, pseudonymizer, tmp_path).post(path, content=NOT_UTF8,
                                                         headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert answer.json() == {"error": "body: JSON decode error: the body is not UTF-8",
                             "problems": [{"field": "body", "message": "JSON decode error: the body is not UTF-8"}]}


def test_other_http_errors_keep_their_status(book: CodeBook, pseudonymizer: Pseudonymizer, tmp_path: Path) -> None:
    client = _client(book, pseudonymizer, tmp_path)
    assert client.get("/api/v1/no-such-route").status_code == 404
    assert client.delete("/api/v1/recognition/check").status_code == 405

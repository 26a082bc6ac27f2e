"""Security headers on every answer, refusals and errors included; HSTS over TLS only; no /docs page loading a
CDN; no cross-origin answer unless an operator lists the origin (exchange/api/security_headers.py, app.py)."""
from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.publish import Publisher
from codes import CodeBook
from exchange.api import Context, create_app
from exchange.api.security_headers import DOCS_HEADERS, HEADERS, HSTS
from tests.fakes import FakePublisher

FOREIGN = "https://elsewhere.example"
PREFLIGHT = {"Origin": FOREIGN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}


def _client(book: CodeBook, *, https: bool = False, **context: Any) -> TestClient:
    """The app with no store and no broker: every answer here is given before either is reached."""
    app = create_app(Context(book=book, database=None, pseudonymizer=None,  # type: ignore[arg-type]
                             publisher=FakePublisher(), bootstrap="127.0.0.1:9",  # type: ignore[arg-type]
                             engine_group="hrx-engine", **context))
    return TestClient(app, base_url="https://testserver" if https else "http://testserver",
                      raise_server_exceptions=False)


def assert_secured(response: httpx.Response, *, tls: bool = False,
                   expected: tuple[tuple[str, str], ...] = HEADERS) -> None:
    where = f"{response.request.method} {response.request.url.path} → {response.status_code}"
    for name, value in expected:
        assert response.headers.get(name) == value, f"{where}: {name} is {response.headers.get(name)!r}"
    assert response.headers.get(HSTS[0]) == (HSTS[1] if tls else None), where
    assert "access-control-allow-origin" not in response.headers, where


def test_the_policy_is_strict() -> None:
    headers = dict(HEADERS)
    assert headers["Content-Security-Policy"].startswith("default-src 'self';")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert "unsafe" not in headers["Content-Security-Policy"]
    assert (headers["X-Content-Type-Options"], headers["Referrer-Policy"], headers["Cache-Control"]) == (
        "nosniff", "no-referrer", "no-store")


def test_answers_refusals_and_errors_carry_the_headers(book: CodeBook) -> None:
    client = _client(book)

    @client.app.get("/boom")  # type: ignore[attr-defined, untyped-decorator]
    def boom() -> None:
        raise RuntimeError("an unhandled error")

    answers = [client.get("/openapi.json"), client.get("/api/v1/no-such-route"),
               client.post("/api/v1/recognition/check", json={}), client.delete("/api/v1/recognition/check"),
               client.get("/api/v1/reason-codes"), client.get("/boom")]
    assert [a.status_code for a in answers] == [200, 404, 401, 405, 401, 500]  # no token: 401 before the body
    for answer in answers:
        assert_secured(answer)


def test_hsts_only_over_tls(book: CodeBook) -> None:
    assert_secured(_client(book, https=True).get("/api/v1/reason-codes"), tls=True)
    assert_secured(_client(book).get("/api/v1/reason-codes"), tls=False)


def test_no_page_loads_anything_from_elsewhere(book: CodeBook) -> None:
    """FastAPI's /docs and /redoc load their scripts from a CDN: they are off; /docs is the exchange's own Swagger UI
    page, whose scripts and styles are files of the package (no other origin, nothing inline)."""
    import re

    client = _client(book)
    assert client.get("/redoc").status_code == 404
    docs = client.get("/docs")
    assert_secured(docs, expected=DOCS_HEADERS)
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert sources and all(s.startswith("/ui/assets/") for s in sources), sources
    assert all(client.get(s).status_code == 200 for s in sources)
    assert "<script>" not in docs.text and "style=" not in docs.text
    assert client.get("/openapi.json").json()["info"]["title"] == "HR Exchange"


def _directives(policy: str) -> dict[str, str]:
    return {d.strip().split(" ", 1)[0]: d.strip() for d in policy.split(";") if d.strip()}


@pytest.mark.parametrize("frame_ancestors", [(), ("https://his.example.cn",)])
def test_only_the_api_reference_may_show_data_images(book: CodeBook, frame_ancestors: tuple[str, ...]) -> None:
    """Swagger UI's icons are ``data:`` images: /docs alone allows them, and nothing else beyond the strict policy;
    the web pages, their assets and the API keep ``default-src 'self'`` for images (no ``img-src`` of their own)."""
    client = _client(book, ui_frame_ancestors=frame_ancestors)
    docs = _directives(client.get("/docs").headers["content-security-policy"])
    strict = _directives(dict(HEADERS)["Content-Security-Policy"])
    assert docs.pop("img-src") == "img-src 'self' data:"
    assert docs == strict
    for path in ("/ui/login", "/ui/operator", "/ui/auditor", "/ui/assets/js/common.js",
                 "/ui/assets/vendor/swagger-ui/swagger-ui.css", "/ui/messages/en.json", "/docs/", "/docsx",
                 "/openapi.json", "/api/v1/reason-codes"):
        policy = client.get(path, follow_redirects=False).headers["content-security-policy"]
        assert "data:" not in policy and "img-src" not in _directives(policy), (path, policy)
        assert _directives(policy)["default-src"] == "default-src 'self'", path


def test_no_cross_origin_answer_by_default(book: CodeBook) -> None:
    client = _client(book)
    preflight = client.options("/api/v1/recognition/check", headers=PREFLIGHT)
    assert_secured(preflight)
    assert not any(name.startswith("access-control-") for name in preflight.headers)
    assert_secured(client.get("/api/v1/reason-codes", headers={"Origin": FOREIGN}))


def test_cors_allows_exactly_the_configured_origins(book: CodeBook) -> None:
    his = "https://his.example.cn"
    client = _client(book, cors_origins=(his,))
    allowed = client.options("/api/v1/recognition/check", headers={**PREFLIGHT, "Origin": his})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == his
    assert client.get("/api/v1/reason-codes", headers={"Origin": his}).headers["access-control-allow-origin"] == his
    refused = client.options("/api/v1/recognition/check", headers=PREFLIGHT)
    assert_secured(refused)  # no access-control-allow-origin for an origin not listed
    assert_secured(client.get("/api/v1/reason-codes", headers={"Origin": FOREIGN}))


def test_every_route_answers_with_the_headers(book, database, broker,  # type: ignore[no-untyped-def]
                                              pseudonymizer) -> None:
    """Each operation of the OpenAPI document, called as a stranger would (placeholder ids, empty bodies)."""
    publisher = Publisher(broker.bootstrap, timeout_s=3)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=publisher,
                      bootstrap=broker.bootstrap, engine_group="hrx-engine")
    app = create_app(context)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            operations = [(method.upper(), re.sub(r"\{[^}/]+\}", "x", path))
                          for path, item in app.openapi()["paths"].items() for method in item]
            assert len(operations) >= 16
            for method, path in operations:
                answer = client.request(method, path, json={} if method == "POST" else None)
                assert answer.status_code < 500, f"{method} {path} → {answer.status_code}: {answer.text}"
                assert_secured(answer)
    finally:
        publisher.close()


def test_only_the_web_pages_may_be_framed_and_only_by_the_configured_origins(book: CodeBook) -> None:
    his, emr = "https://his.example.cn", "https://emr.example.cn:8443"
    client = _client(book, ui_frame_ancestors=(his, emr))
    for path in ("/ui/login", "/ui/operator", "/ui/assets/js/common.js", "/ui/nothing"):
        answer = client.get(path)
        policy = answer.headers["content-security-policy"]
        assert f"frame-ancestors {his} {emr}" in policy and "'none'" not in policy.split("frame-ancestors")[1], path
        assert "x-frame-options" not in answer.headers, path  # DENY would forbid the HIS's frame
        assert policy.startswith("default-src 'self'") and answer.headers["x-content-type-options"] == "nosniff"
    for path in ("/api/v1/reason-codes", "/openapi.json", "/ui"):  # the API and the rest: as before
        assert_secured(client.get(path, follow_redirects=False))
    assert_secured(client.get("/docs"), expected=DOCS_HEADERS)
    assert_secured(_client(book).get("/ui/login"))  # without the setting no page may be framed


@pytest.mark.parametrize("value", ["*", "https://his.example.cn/ui", "his.example.cn", "https://*.example.cn"])
def test_frame_ancestors_must_be_origins(value: str) -> None:
    from exchange.config import Settings

    with pytest.raises(ValueError, match="HRX_UI_FRAME_ANCESTORS"):
        Settings.from_env({"HRX_UI_FRAME_ANCESTORS": f"https://ok.example.cn {value}"}, stack=False)
    read = Settings.from_env({"HRX_UI_FRAME_ANCESTORS": " https://a.example.cn\thttps://b.example.cn:8443 "},
                             stack=False)
    assert read.ui_frame_ancestors == ("https://a.example.cn", "https://b.example.cn:8443")
    assert read.to_env()["HRX_UI_FRAME_ANCESTORS"] == "https://a.example.cn https://b.example.cn:8443"

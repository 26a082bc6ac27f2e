"""The API reference (``/docs``, the packaged Swagger UI) in a real browser, offline and under its
Content-Security-Policy: every operation drawn, no console error, no policy violation, nothing loaded from
beyond 127.0.0.1. The page needs no store and no broker: the app is served by uvicorn without its lifespan."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from codes import load_codebook
from exchange.api import Context, create_app
from tests.exchange.web.test_pages import browser  # noqa: F401 (fixture)
from tests.fakes import FakePublisher
from tests.fixtures.servers import app_on_loopback

pytestmark = pytest.mark.integration
playwright = pytest.importorskip("playwright.sync_api")

#: Each policy violation the page reports, as text (added before any of the page's own scripts run).
WATCH_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


@pytest.fixture(scope="module")
def reference() -> Iterator[str]:
    context = Context(book=load_codebook(), database=None, pseudonymizer=None,  # type: ignore[arg-type]
                      publisher=FakePublisher(), bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    with app_on_loopback(create_app(context), lifespan="off") as base:
        yield base


def test_the_api_reference_draws_every_operation_offline_without_an_error(browser: Any,  # noqa: F811
                                                                           reference: str) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    blocked: list[str] = []
    problems: list[str] = []

    def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname != "127.0.0.1":
            blocked.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", only_loopback)
    context.add_init_script(WATCH_VIOLATIONS)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    try:
        page.goto(f"{reference}/docs")
        page.locator("body[data-ready=true]").wait_for(state="attached", timeout=30_000)
        page.locator(".opblock").nth(10).wait_for(timeout=30_000)  # more than ten operations drawn
        assert page.locator(".opblock").count() > 10
        # an operation opened: its parameters, the schema toggles and selects whose icons are data: images
        audit = page.locator(".opblock", has=page.locator(".opblock-summary-path[data-path='/api/v1/audit']"))
        audit.locator(".opblock-summary").first.click()
        audit.locator(".parameters").wait_for()
        page.get_by_role("button", name="Try it out").first.click()
        audit.locator("select").first.wait_for()
        drawn = page.evaluate("""() => [...document.querySelectorAll('*')]
            .map((e) => getComputedStyle(e).backgroundImage).filter((b) => b.startsWith('url("data:')).length""")
        assert drawn > 0  # the page does draw data: images: the policy is put to the test
        page.wait_for_timeout(500)  # late console messages
        violations = page.evaluate("window.__violations")
    finally:
        context.close()
    assert violations == []
    assert problems == []
    assert blocked == [], f"requests beyond 127.0.0.1: {blocked}"

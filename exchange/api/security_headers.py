"""Security headers on every answer of the API, refusals and errors included (pure ASGI middleware).

The API answers JSON about patients: nothing may be cached (``Cache-Control: no-store``), sniffed into another
type, framed by another site or sent on as a referrer. The policy allows the API's own origin only
(``default-src 'self'``): the exchange serves no page that loads anything from elsewhere — its web pages
(exchange.web, ``/ui/``) and its API reference (``/docs``, Swagger UI) ship every script and style in the package
and start them from files, never inline; FastAPI's own ``/docs`` page, which loads from a CDN, is off.
``Strict-Transport-Security`` is sent on answers over TLS only: over plain HTTP a browser ignores it, and sending
it there would claim a protection that is not in place.

The API reference is the one page that shows images from ``data:`` URLs: Swagger UI's stylesheet draws icons
(a select's arrow, ...) as inline SVG and PNG. ``/docs`` alone gets ``img-src 'self' data:`` (:data:`DOCS_CSP`).
A browser applies the policy of the page to everything the page loads, never the policy sent with a script or a
stylesheet, so the document is the only answer that needs it: Swagger UI's own files under
``/ui/assets/vendor/`` and every ``/ui/`` page keep ``default-src 'self'`` for images too.

A hospital may embed the web pages in its HIS: ``HRX_UI_FRAME_ANCESTORS`` names the origins that may frame
``/ui/`` (CSP ``frame-ancestors``, which supersedes ``X-Frame-Options``; that header, which can name no origin, is
left off there). Everything else, the API included, stays unframeable.
"""
from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: On every answer. ``frame-ancestors 'none'`` is the CSP form of ``X-Frame-Options: DENY``, for browsers that
#: honour only one of the two.
HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),  # patient data must not stay in a browser's or a proxy's cache
)
#: On answers over TLS only: one year, this host only (the exchange does not know its sibling hosts).
HSTS = ("Strict-Transport-Security", "max-age=31536000")
#: The web pages' static files (exchange/web) hold no patient data: a browser keeps them and revalidates each use
#: (ETag, 304) instead of loading the chart library again on every page.
STATIC_PREFIXES = ("/ui/assets/", "/ui/messages/")
#: The web pages, which HRX_UI_FRAME_ANCESTORS may let a HIS frame.
UI_PREFIX = "/ui/"
CSP = dict(HEADERS)["Content-Security-Policy"]
#: The API reference (Swagger UI), whose icons are ``data:`` images.
DOCS_PATH = "/docs"
DOCS_CSP = CSP.replace("default-src 'self';", "default-src 'self'; img-src 'self' data:;")
DOCS_HEADERS = tuple((name, DOCS_CSP if name == "Content-Security-Policy" else value) for name, value in HEADERS)


def framed_by(origins: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """:data:`HEADERS` for a page ``origins`` may frame: ``frame-ancestors <origins>``, no ``X-Frame-Options``."""
    csp = CSP.replace("frame-ancestors 'none'", f"frame-ancestors {' '.join(origins)}")
    return tuple((name, csp if name == "Content-Security-Policy" else value)
                 for name, value in HEADERS if name != "X-Frame-Options")


class SecurityHeaders:
    """Sets :data:`HEADERS` (and :data:`HSTS` over TLS) on each HTTP answer, replacing a route's own value;
    under ``/ui/`` the origins ``ui_frame_ancestors`` may frame the page."""

    def __init__(self, app: ASGIApp, ui_frame_ancestors: tuple[str, ...] = ()) -> None:
        self.app = app
        self.ui_headers = framed_by(ui_frame_ancestors) if ui_frame_ancestors else HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        base = self.ui_headers if path.startswith(UI_PREFIX) else DOCS_HEADERS if path == DOCS_PATH else HEADERS
        framable = not any(name == "X-Frame-Options" for name, _ in base)
        added = base + ((HSTS,) if scope.get("scheme") == "https" else ())
        if path.startswith(STATIC_PREFIXES):
            added += (("Cache-Control", "no-cache"),)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in added:
                    headers[name] = value
                if framable and "X-Frame-Options" in headers:  # a route's own: would deny the frame
                    del headers["X-Frame-Options"]
            await send(message)

        await self.app(scope, receive, send_with_headers)

"""The request id of every API request: the caller's ``X-Request-ID`` when it is a plain token, else a new one;
answered in ``X-Request-ID`` and attached to every log line written while the request is handled
(:mod:`adapters.log_format`). ``POST /fhir`` also writes it as the message id of a Bundle without an
``identifier``, so that the engine's log names the same id when it stores the results."""
from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.log_format import current_ids, log_ids

HEADER = "X-Request-ID"
#: What a caller's id may look like (anything else is replaced, not echoed: it lands in logs).
_PLAIN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    found = current_ids().get("request_id")
    return str(found) if found else None


class RequestIds:
    """ASGI middleware: a request id per HTTP request, in the log context and in the answer's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = given if _PLAIN.fullmatch(given) else uuid.uuid4().hex

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        with log_ids(request_id=rid):
            await self.app(scope, receive, sending)

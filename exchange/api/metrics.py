"""``GET /metrics``: the API process's metrics in the Prometheus text format, and the middleware that counts
requests.

Open like ``/api/v1/health``: no metric carries patient data (``exchange.metrics``). The store's gauges
(outbox backlog, dead letters kept) are read at scrape time.
"""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange import metrics
from exchange.api.access import PUBLIC
from exchange.api.app import context_of

router = APIRouter(tags=["operations"])

FHIR_PATH = "/fhir"
CHECK_PATH = "/api/v1/recognition/check"


@router.get("/metrics", summary="Metrics in the Prometheus text format (no patient data)",
            response_class=Response, responses={200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "the Prometheus text exposition format (`text/plain; version=0.0.4`)"}})
def metrics_text(request: Request, _: None = Depends(PUBLIC)) -> Response:  # noqa: B008 - scrapers need no login
    state = request.app.state
    if getattr(state, "store_metrics", None) is None:
        state.store_metrics = metrics.store_registry(context_of(request).database)
    store: CollectorRegistry = state.store_metrics
    return Response(generate_latest(REGISTRY) + generate_latest(store), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """ASGI middleware: counts every answered request by route template (never the raw path, which may hold
    ids), method and status; ``POST /fhir`` answers also as the FHIR door's, and times the check."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
            if route == FHIR_PATH and method == "POST":
                metrics.answered("fhir", status)
            elif route == CHECK_PATH:
                metrics.CHECK_SECONDS.observe(time.perf_counter() - started)

"""``GET /api/v1/health``: broker, store and consumer lag, each with its own verdict; the pseudonym key id."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from exchange.api.app import context_of
from exchange.broker import consumer_lag
from schemas.topics import RESULT_TOPICS

router = APIRouter(prefix="/api/v1", tags=["operations"])


@router.get("/health", summary="Is the exchange able to accept and answer? (broker, store, consumer lag)")
def health(request: Request) -> JSONResponse:
    context = context_of(request)
    report: dict[str, Any] = {"codes": {"ok": True, "version": context.book.version},
                              "pseudonym": {"key_id": context.pseudonymizer.key_id}}  # what adapters must match
    try:
        with context.database.connect() as conn:
            conn.execute(text("SELECT 1"))
        report["store"] = {"ok": True, "dialect": context.database.dialect.name}
    except Exception as exc:  # noqa: BLE001 - health reports every failure instead of raising
        report["store"] = {"ok": False, "error": str(exc)}
    try:
        lag = consumer_lag(context.bootstrap, context.engine_group, RESULT_TOPICS)
        report["broker"] = {"ok": True, "bootstrap": context.bootstrap}
        report["consumer"] = {"group": context.engine_group, "lag": lag, "total_lag": sum(lag.values())}
    except Exception as exc:  # noqa: BLE001
        report["broker"] = {"ok": False, "bootstrap": context.bootstrap, "error": str(exc)}
    ok = report["store"]["ok"] and report["broker"]["ok"]
    report["status"] = "ok" if ok else "degraded"
    return JSONResponse(report, status_code=200 if ok else 503)

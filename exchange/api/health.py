"""``GET /api/v1/health``: broker, store and consumer lag, each with its own verdict; the pseudonym key id."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from exchange.api.access import PUBLIC
from exchange.api.app import context_of
from exchange.api.fields import ANSWER
from exchange.broker import consumer_lag
from schemas.topics import RESULT_TOPICS

router = APIRouter(prefix="/api/v1", tags=["operations"])


class CodesHealth(BaseModel):
    model_config = ANSWER

    ok: bool
    version: str = Field(description="digest of the code data in use")


class StoreHealth(BaseModel):
    model_config = ANSWER

    ok: bool
    dialect: str = Field(None, description="`postgresql` or `sqlite`; present when the store answered")
    error: str = Field(None, description="present when the store did not answer")


class BrokerHealth(BaseModel):
    model_config = ANSWER

    ok: bool
    bootstrap: str
    error: str = Field(None, description="present when the broker did not answer")


class ConsumerHealth(BaseModel):
    model_config = ANSWER

    group: str
    lag: dict[str, int] = Field(description="per result topic, messages the engine has not yet committed")
    total_lag: int


class PseudonymHealth(BaseModel):
    model_config = ANSWER

    key_id: str = Field(description="algorithm and fingerprint of the pseudonym key (`sm3-…`): every adapter's "
                                    "events must carry this id")


class Health(BaseModel):
    """Each part's own verdict; the status is `ok` only when the store and the broker both answer."""

    model_config = ANSWER

    codes: CodesHealth
    pseudonym: PseudonymHealth
    store: StoreHealth
    broker: BrokerHealth
    consumer: ConsumerHealth = Field(None, description="present when the broker answered")
    status: Literal["ok", "degraded"]


@router.get("/health", summary="Is the exchange able to accept and answer? (broker, store, consumer lag)",
            response_model=None, responses={200: {"model": Health, "description": "the store and the broker answer"},
                                            503: {"model": Health, "description": "degraded: see which part failed"}})
def health(request: Request, _: None = Depends(PUBLIC)) -> JSONResponse:  # noqa: B008 - probes need no login
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

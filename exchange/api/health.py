"""Health for operators and orchestrators, all open like a probe must be (no patient data in any of them):

- ``GET /api/v1/health/live`` (liveness): the process answers HTTP. Nothing else is checked, so an orchestrator
  restarts the process only when it is stuck, never because PostgreSQL or Kafka is away.
- ``GET /api/v1/health/ready`` (readiness): the store answers, its migrations are at the revision this code
  expects, the broker accepts connections, the pseudonym key is loaded; 503 naming each part missing.
- ``GET /api/v1/health``: broker, store and consumer lag, each with its own verdict; the pseudonym key id, the
  outbox backlog, the dead letters kept, the version and commit.
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from exchange.api.access import PUBLIC
from exchange.api.app import context_of
from exchange.api.fields import ANSWER
from exchange import operations
from exchange.broker import consumer_lag
from exchange.store.db import StoreNotMigrated, require_current
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


class BacklogHealth(BaseModel):
    model_config = ANSWER

    outbox: int = Field(description="decisions and feedback stored but not yet published")
    dead_letters: int = Field(description="dead letters kept in the store")


class Health(BaseModel):
    """Each part's own verdict; the status is `ok` only when the store and the broker both answer."""

    model_config = ANSWER

    version: str
    commit: str = Field(description="the commit this process runs (HRX_COMMIT, else git), or `unknown`")
    backlog: BacklogHealth = Field(None, description="present when the store answered")

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
    report: dict[str, Any] = {"version": operations.version(), "commit": operations.commit(),
                              "codes": {"ok": True, "version": context.book.version},
                              "pseudonym": {"key_id": context.pseudonymizer.key_id}}  # what adapters must match
    try:
        with context.database.connect() as conn:
            conn.execute(text("SELECT 1"))
        report["store"] = {"ok": True, "dialect": context.database.dialect.name}
        backlog = operations.store_backlog(context.database)
        report["backlog"] = {"outbox": backlog.outbox, "dead_letters": backlog.dead_letters}
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


class Live(BaseModel):
    model_config = ANSWER

    status: Literal["ok"]


@router.get("/health/live", summary="Liveness: the process answers (nothing else is checked)", response_model=Live)
def live(_: None = Depends(PUBLIC)) -> dict[str, str]:  # noqa: B008 - probes need no login
    return {"status": "ok"}


class Readiness(BaseModel):
    """Ready only when every part is; ``missing`` names what is not, one sentence per part."""

    model_config = ANSWER

    status: Literal["ready", "not ready"]
    store: bool
    migrations: bool = Field(description="the store is at the migration revision this code ships")
    broker: bool
    pseudonym_key: bool
    missing: list[str]


@router.get("/health/ready", summary="Readiness: store, migrations at head, broker, pseudonym key",
            response_model=None, responses={200: {"model": Readiness, "description": "ready to take traffic"},
                                            503: {"model": Readiness, "description": "something is missing"}})
def ready(request: Request, _: None = Depends(PUBLIC)) -> JSONResponse:  # noqa: B008 - probes need no login
    context = context_of(request)
    missing: list[str] = []
    store_error = operations.store_answers(context.database)
    if store_error:
        missing.append(f"store: {store_error}")
    at_head = False
    if not store_error:
        try:
            require_current(context.database)
            at_head = True
        except StoreNotMigrated as exc:
            missing.append(f"migrations: {exc}")
        except Exception as exc:  # noqa: BLE001 - readiness reports every failure instead of raising
            missing.append(f"migrations: cannot be read: {exc}")
    broker_error = operations.broker_reachable(context.bootstrap)
    if broker_error:
        missing.append(f"broker: {broker_error}")
    key = bool(getattr(context.pseudonymizer, "key_id", None))
    if not key:
        missing.append("pseudonym key: none loaded (HRX_PSEUDONYM_KEY_FILE)")
    answer = {"status": "not ready" if missing else "ready", "store": not store_error, "migrations": at_head,
              "broker": not broker_error, "pseudonym_key": key, "missing": missing}
    return JSONResponse(answer, status_code=503 if missing else 200)

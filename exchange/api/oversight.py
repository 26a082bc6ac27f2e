"""Operator views: regulator statistics and the audit trail of a patient's data."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime

from codes.calendar import BEIJING
from exchange import audit
from exchange.api.actor import actor
from exchange.api.app import ApiError, context_of
from exchange.audit import Actor
from exchange.stats import statistics, valid_scope

router = APIRouter(prefix="/api/v1", tags=["operators"])


@router.get("/stats", summary="Presented, accepted, rejected by reason, recognition rate, avoided cost")
def stats(request: Request, scope: str | None = Query(None, description="national, region id, alliance id, "
                                                      "province/city/division code or institution id"),
          date_from: AwareDatetime | None = Query(None, alias="from"),
          date_to: AwareDatetime | None = Query(None, alias="to")) -> dict[str, Any]:
    context = context_of(request)
    if not valid_scope(context.book, scope):
        raise ApiError("scope", f"unknown scope {scope!r}")
    end = date_to or datetime.now(BEIJING)
    start = date_from or end - timedelta(days=30)
    if start >= end:
        raise ApiError("from", "from must be before to")
    with context.database.connect() as conn:
        return statistics(conn, context.book, scope, start, end)


@router.get("/audit", summary="Who read a patient's data, for which institution and purpose, and when")
def audit_trail(request: Request, patient: str = Query(pattern="^[0-9a-f]{64}$"),
                limit: int = Query(500, ge=1, le=5000), who: Actor = Depends(actor)) -> dict[str, Any]:  # noqa: B008
    context = context_of(request)
    with context.database.begin() as conn:
        records = audit.trail(conn, patient, limit)
        audit.record(conn, who, "audit.read", patient, {"records": len(records)})
    return {"patient": patient, "records": records}

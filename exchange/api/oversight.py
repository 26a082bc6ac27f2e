"""Operator views: regulator statistics and the audit trail of a patient's data."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, Field

from codes.calendar import BEIJING
from exchange import audit
from exchange.api.access import require, within_scope
from exchange.api.app import ApiError, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER, Pseudonym, Timestamp
from exchange.auth.principal import Principal
from exchange.auth.roles import purposes
from exchange.stats import in_scope, statistics, valid_scope

router = APIRouter(prefix="/api/v1", tags=["operators"], responses=AUTHENTICATED)

#: Per issuer or item: how many presented, accepted, rejected (a count that stayed zero is left out).
Counts = dict[Literal["presented", "accepted", "rejected"], int]


class RejectedFor(BaseModel):
    model_config = ANSWER

    count: int
    reason_zh: str | None = Field(description="null for a code the code book no longer lists")
    counts_as_non_recognition: bool | None


class OverriddenFor(BaseModel):
    model_config = ANSWER

    count: int
    rate: float | None = Field(description="overridden for this reason / cards presented")
    reason_zh: str | None = Field(description="null for `none` (no reason given) or a code the book no longer lists")


class CdsFigures(BaseModel):
    """Cards of the CDS Hooks services (order-select, order-sign, patient-view) and what clinicians did."""

    model_config = ANSWER

    presented: int = Field(description="cards issued")
    accepted: int = Field(description="cards fed back as accepted")
    overridden: int = Field(description="cards fed back as overridden")
    override_rate: float | None = Field(description="overridden / presented; null when none was presented")
    overridden_by_reason: dict[str, OverriddenFor] = Field(description="by reason code; `none`: without a reason")


class Statistics(BaseModel):
    """docs/rules.md, "Reason codes": recognition rate = accepted / (presented − rejections whose reason does not
    count as non-recognition); avoided cost = the prices of accepted items at the requester's provincial price."""

    model_config = ANSWER

    scope: str
    from_: Timestamp = Field(alias="from")
    to: Timestamp
    requesting_institutions: int = Field(description="requesting institutions inside the scope")
    presented: int = Field(description="recognizable results presented, once per encounter")
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, RejectedFor]
    excluded_from_denominator: int
    recognition_rate: float | None = Field(description="null when nothing counts in the denominator")
    avoided_cost_cny: float
    per_issuer: dict[str, Counts]
    per_item: dict[str, Counts]
    cds: CdsFigures = Field(description="CDS Hooks: cards presented, accepted and overridden (override rates)")


class AuditEntry(BaseModel):
    model_config = ANSWER

    at: Timestamp
    patient: Pseudonym | None = Field(description="whose data; null for a record about no one patient")
    actor: str
    institution: str | None
    purpose: str = Field(description=f"why the data was read (one of {', '.join(purposes())})")
    role: str | None = Field(description="the reader's role")
    department: str | None
    on_behalf_of: str | None = Field(description="the clinician a system (HIS) read for")
    break_glass: bool = Field(description="an emergency read outside the reader's normal rights")
    action: str = Field(description="what was done: `recognition.check`, `patient.results`, `decision.accept`, ...")
    detail: dict[str, Any]


class AuditTrail(BaseModel):
    model_config = ANSWER

    patient: Pseudonym | None = Field(description="the patient asked about, if one was")
    records: list[AuditEntry] = Field(description="break-glass reads first, then newest first")


@router.get("/stats", summary="Presented, accepted, rejected by reason, recognition rate, avoided cost",
            response_model=Statistics, responses=refusals(422))
def stats(request: Request, scope: str | None = Query(None, description="national, region id, alliance id, "
                                                      "province/city/division code or institution id"),
          date_from: AwareDatetime | None = Query(None, alias="from"),
          date_to: AwareDatetime | None = Query(None, alias="to"),
          who: Principal = Depends(require("operator", purpose="operations"))) -> dict[str, Any]:  # noqa: B008
    """For the operator's scope, or a scope inside it (the default: the operator's own)."""
    context = context_of(request)
    if not valid_scope(context.book, scope):
        raise ApiError("scope", f"unknown scope {scope!r}")
    scope = within_scope(who, context.book, scope, "scope")
    end = date_to or datetime.now(BEIJING)
    start = date_from or end - timedelta(days=30)
    if start >= end:
        raise ApiError("from", "from must be before to")
    with context.database.connect() as conn:
        return statistics(conn, context.book, scope, start, end)


@router.get("/audit", summary="The audit: by patient, principal or institution, break-glass reads first",
            response_model=AuditTrail, responses=refusals(422))
def audit_trail(request: Request, patient: str | None = Query(None, pattern="^[0-9a-f]{64}$"),
                principal: str | None = Query(None, max_length=64, description="an account or client id"),
                institution: str | None = Query(None, max_length=64),
                break_glass: bool = Query(False, description="only break-glass reads (the review queue)"),
                limit: int = Query(500, ge=1, le=5000),
                who: Principal = Depends(require("auditor", purpose="audit"))) -> dict[str, Any]:  # noqa: B008
    """Records of reads by institutions inside the auditor's scope (all of them for a national auditor); the
    listing is itself audited."""
    context = context_of(request)
    if institution is not None:
        within_scope(who, context.book, institution, "institution")
    with context.database.begin() as conn:
        records = [r for r in audit.trail(conn, patient, limit, principal=principal, institution=institution,
                                          break_glass_only=break_glass)
                   if who.scope in (None, "national") or (r["institution"] is not None
                                                          and in_scope(context.book, r["institution"], who.scope))]
        audit.record(conn, who.actor("audit"), "audit.read", patient,
                     {"records": len(records), "principal": principal, "institution": institution,
                      "break_glass": break_glass})
    return {"patient": patient, "records": records}

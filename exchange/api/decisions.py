"""``/api/v1/decisions``: accept, reject with a coded reason, revoke — one result or a whole source hospital."""
from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from exchange import audit, outbox
from exchange.api.access import ANY_ROLE, patient_read, require, same_clinician, same_institution, withhold_blocked
from exchange.api.app import ApiError, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER, Pseudonym, Timestamp
from exchange.api.recognition import PatientRef, patient_pseudonym
from exchange.auth.principal import Principal
from exchange.decisions import DecisionError, DecisionRequest, as_dict, decide, result_ref
from exchange.recognize import Prior, Recognizer, items_of
from exchange.store import current_results

router = APIRouter(prefix="/api/v1", tags=["decisions"], responses=AUTHENTICATED)


class DecisionBody(BaseModel):
    result_id: str = Field(description="result.ref from the check answer: <issuer>/<result id>")
    item: str | None = Field(None, description="unified item code; default the result's own item")
    requesting_institution: str
    clinician_id: str = Field(min_length=1, max_length=64)
    encounter_id: str = Field(min_length=1, max_length=64)
    order_id: str | None = Field(None, max_length=64)
    trigger: Literal["encounter", "order"]
    decision: Literal["accept", "reject", "revoke"]
    reason_code: str | None = None
    note: str | None = None


class BatchBody(BaseModel):
    """Decide every recognizable result of one patient from one source hospital at once."""

    patient: PatientRef
    issuer: str = Field(description="the source hospital whose results are decided")
    requesting_institution: str
    clinician_id: str = Field(min_length=1, max_length=64)
    encounter_id: str = Field(min_length=1, max_length=64)
    trigger: Literal["encounter", "order"]
    decision: Literal["accept", "reject"]
    reason_code: str | None = None
    note: str | None = None


class ReasonCodeView(BaseModel):
    """A coded reason for repeating a test instead of reusing a recognizable result (docs/rules.md, "Reason
    codes")."""

    model_config = ANSWER

    code: str
    zh: str
    en: str
    counts_as_non_recognition: bool = Field(description="false: a rejection for this reason leaves the recognition "
                                            "rate's denominator")
    note_required: bool = Field(description="a rejection for this reason needs a `note`")


class DecidedResult(BaseModel):
    model_config = ANSWER

    ref: str = Field(description="`<issuer>/<result_id>`")
    version: int = Field(description="the result's version the decision was made on")
    item: str | None = Field(description="the unified item decided")


class DecisionView(BaseModel):
    """One recorded decision (the issuer receives it as a ``hr.decision.v1`` event)."""

    model_config = ANSWER

    decision_id: str
    result: DecidedResult
    patient: Pseudonym
    requesting_institution: str
    clinician_id: str
    encounter_id: str
    order_id: str | None
    trigger: Literal["encounter", "order"]
    decision: Literal["accept", "reject", "revoke"]
    reason_code: str | None
    note: str | None
    revokes: str | None = Field(description="for a revoke: the decision_id it undoes")
    decided_at: Timestamp


class BatchAnswer(BaseModel):
    model_config = ANSWER

    issuer: str
    decided: int = Field(description="how many results' items were decided (every recognizable one)")
    decisions: list[DecisionView]


@router.get("/reason-codes", summary="Reason codes for a repeat, from the code book",
            response_model=list[ReasonCodeView])
def list_reasons(request: Request, _: Principal = Depends(require(*ANY_ROLE))) -> list[dict[str, Any]]:  # noqa: B008
    return [asdict(r) for r in context_of(request).book.reason_codes.values()]


@router.post("/decisions", status_code=201, summary="Record a clinician's decision on one prior result",
             response_model=DecisionView, responses=refusals(404, 409, 422))
def post_decision(body: DecisionBody, request: Request,
                  who: Principal = Depends(require("clinician", "his", purpose="treatment"))  # noqa: B008
                  ) -> dict[str, Any]:
    """By the clinician named in ``clinician_id`` (the caller, or the one a HIS acts for), for their own
    institution, within a treatment relationship with the result's patient."""
    context = context_of(request)
    same_institution(who, body.requesting_institution, "requesting_institution")
    same_clinician(who, body.clinician_id)
    now = datetime.now(UTC)
    try:
        with context.database.begin() as conn:
            stored = decide(conn, context.book, DecisionRequest(
                result_ref=body.result_id, requesting_institution=body.requesting_institution,
                clinician_id=body.clinician_id, encounter_id=body.encounter_id, trigger=body.trigger,
                decision=body.decision, item=body.item, order_id=body.order_id, reason_code=body.reason_code,
                note=body.note), now)
            access = patient_read(conn, who, stored.patient)  # a refusal rolls the decision back
            audit.record(conn, who.actor("treatment", break_glass=access.break_glass), f"decision.{body.decision}",
                         stored.patient,
                         {"decision_id": stored.decision_id, "result": body.result_id, "item": stored.item_code})
    except DecisionError as exc:
        raise ApiError(exc.field, exc.message, exc.status) from None
    outbox.relay_soon(context.database, context.publisher)
    return as_dict(stored)


@router.post("/decisions/batch", status_code=201, summary="Accept or reject all results from one source hospital",
             response_model=BatchAnswer, responses=refusals(422))
def post_batch(body: BatchBody, request: Request,
               who: Principal = Depends(require("clinician", "his", purpose="treatment"))  # noqa: B008
               ) -> dict[str, Any]:
    context = context_of(request)
    book = context.book
    same_institution(who, body.requesting_institution, "requesting_institution")
    same_clinician(who, body.clinician_id)
    if body.issuer not in book.institutions:
        raise ApiError("issuer", f"unknown institution {body.issuer!r}")
    pseudonym = patient_pseudonym(context, body.patient)
    now = datetime.now(UTC)
    recognizer = Recognizer(book, body.requesting_institution, now, context.recognition_memo)
    decided = []
    try:
        with context.database.begin() as conn:
            access = patient_read(conn, who, pseudonym)
            for result in withhold_blocked(conn, book, current_results(conn, pseudonym), pseudonym, who, access)[0]:
                if result.issuer != body.issuer:
                    continue
                for code, present in items_of(result):
                    answer = recognizer(Prior(result.issuer, code, result.status, result.reported_at, present))
                    if not answer.recognizable:
                        continue
                    decided.append(decide(conn, book, DecisionRequest(
                        result_ref=result_ref(result.issuer, result.result_id),
                        requesting_institution=body.requesting_institution, clinician_id=body.clinician_id,
                        encounter_id=body.encounter_id, trigger=body.trigger, decision=body.decision, item=code,
                        reason_code=body.reason_code, note=body.note), now))
            audit.record(conn, who.actor("treatment", break_glass=access.break_glass),
                         f"decision.batch.{body.decision}", pseudonym,
                         {"issuer": body.issuer, "decisions": [d.decision_id for d in decided]})
    except DecisionError as exc:
        raise ApiError(exc.field, exc.message, exc.status) from None
    outbox.relay_soon(context.database, context.publisher)
    return {"issuer": body.issuer, "decided": len(decided), "decisions": [as_dict(d) for d in decided]}

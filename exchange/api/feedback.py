"""``/api/v1/feedback``: error reports to the issuer (report problem / image problem) and their status."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from codes.calendar import beijing_iso
from exchange import audit, outbox
from exchange.api.access import patient_read, require, same_institution, within_scope
from exchange.api.app import ApiError, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER, Timestamp
from exchange.api.tables import TABLE_RESPONSES, Table, TableFormat, answer_table
from exchange.auth.principal import Principal
from exchange.decisions import find_result, result_ref
from exchange.store.models import Feedback

router = APIRouter(prefix="/api/v1", tags=["feedback"], responses=AUTHENTICATED)
STATUSES = ("open", "acknowledged", "resolved")


class FeedbackBody(BaseModel):
    result_id: str = Field(description="result.ref from the check answer: <issuer>/<result id>")
    kind: Literal["report_problem", "image_problem"]
    note: str = Field(min_length=1, max_length=2000)
    reporter_institution: str
    reporter_id: str | None = Field(None, max_length=64)


class StatusBody(BaseModel):
    status: Literal["open", "acknowledged", "resolved"]


class FeedbackResult(BaseModel):
    model_config = ANSWER

    ref: str = Field(description="`<issuer>/<result_id>`")
    version: int = Field(description="the result's version the report is about")


class FeedbackView(BaseModel):
    """An error report to the issuer of a result, and where the issuer is with it."""

    model_config = ANSWER

    feedback_id: str
    result: FeedbackResult
    kind: Literal["report_problem", "image_problem"]
    note: str
    reporter_institution: str
    reporter_id: str | None
    status: Literal["open", "acknowledged", "resolved"]
    created_at: Timestamp
    updated_at: Timestamp
    age_days: int = Field(description="whole days since the report was made, at the time of the answer (as "
                          "`oldest_unresolved_days` of GET /api/v1/feedback-summary)")
    published: bool = Field(description="the current status has reached the issuer's topic")


class FeedbackList(BaseModel):
    model_config = ANSWER

    issuer: str
    feedback: list[FeedbackView] = Field(description="newest first")


def _as_dict(f: Feedback, now: datetime | None = None) -> dict[str, Any]:
    created = f.created_at if f.created_at.tzinfo else f.created_at.replace(tzinfo=UTC)
    return {"feedback_id": f.feedback_id, "result": {"ref": result_ref(f.result_issuer, f.result_id),
            "version": f.result_version}, "kind": f.kind, "note": f.note,
            "reporter_institution": f.reporter_institution, "reporter_id": f.reporter_id, "status": f.status,
            "created_at": beijing_iso(f.created_at), "updated_at": beijing_iso(f.updated_at),
            "age_days": ((now or datetime.now(UTC)) - created).days, "published": f.published_at is not None}


@router.post("/feedback", status_code=201, summary="Report a problem with a result to its issuer",
             response_model=FeedbackView, responses=refusals(404, 422))
def post_feedback(body: FeedbackBody, request: Request,
                  who: Principal = Depends(require("clinician", "his", purpose="treatment"))  # noqa: B008
                  ) -> dict[str, Any]:
    """From the caller's own institution, on a result of a patient it is treating."""
    context = context_of(request)
    same_institution(who, body.reporter_institution, "reporter_institution")
    if body.reporter_institution not in context.book.institutions:
        raise ApiError("reporter_institution", f"unknown institution {body.reporter_institution!r}")
    now = datetime.now(UTC)
    with context.database.begin() as conn:
        result = find_result(conn, body.result_id)
        if result is None:
            raise ApiError("result_id", f"no stored result {body.result_id!r}", 404)
        row = {"feedback_id": str(uuid.uuid4()), "result_issuer": result.issuer, "result_id": result.result_id,
               "result_version": result.version, "patient": result.patient, "kind": body.kind, "note": body.note,
               "reporter_institution": body.reporter_institution, "reporter_id": body.reporter_id,
               "status": "open", "created_at": now, "updated_at": now, "published_at": None}
        conn.execute(insert(Feedback).values(row))
        access = patient_read(conn, who, result.patient)
        audit.record(conn, who.actor("treatment", break_glass=access.break_glass), "feedback.create",
                     result.patient, {"feedback_id": row["feedback_id"]})
    outbox.relay_soon(context.database, context.publisher)
    return _as_dict(Feedback(**row))


#: The columns of the list as a table: a report per row, its result's reference and version side by side.
FEEDBACK_COLUMNS = ("feedback_id", "result_ref", "result_version", "kind", "status", "age_days", "created_at",
                    "updated_at", "reporter_institution", "reporter_id", "note", "published")


@router.get("/feedback", summary="Feedback per issuer, filterable by status", response_model=FeedbackList,
            responses={**refusals(422), **TABLE_RESPONSES})
def list_feedback(request: Request, issuer: str, status: str | None = None,
                  format: TableFormat | None = Query(None, description="`csv`/`xlsx`: a row per report"),  # noqa: A002
                  who: Principal = Depends(require("his", "source", "operator"))) -> Any:  # noqa: B008
    """The issuer's own systems, or an operator whose scope covers the issuer. As a table (CSV, Excel): the
    answer's reports in its order, ``result`` written as ``result_ref`` and ``result_version``."""
    context = context_of(request)
    if issuer not in context.book.institutions:
        raise ApiError("issuer", f"unknown institution {issuer!r}")
    if who.role == "operator":
        within_scope(who, context.book, issuer, "issuer")
    else:
        same_institution(who, issuer, "issuer")
    if status is not None and status not in STATUSES:
        raise ApiError("status", f"status must be one of {', '.join(STATUSES)}")
    query = select(Feedback).where(Feedback.result_issuer == issuer).order_by(Feedback.created_at.desc())
    if status:
        query = query.where(Feedback.status == status)
    with context.database.connect() as conn:
        rows = Session(conn).scalars(query).all()
    now = datetime.now(UTC)
    listed = [_as_dict(f, now) for f in rows]
    flat = [{**f, "result_ref": f["result"]["ref"], "result_version": f["result"]["version"]} for f in listed]
    table = Table(f"feedback-{issuer}", FEEDBACK_COLUMNS, flat)
    return answer_table(request, format, table, lambda: {"issuer": issuer, "feedback": listed})


@router.post("/feedback/{feedback_id}/status", summary="The issuer acknowledges or resolves a report",
             response_model=FeedbackView, responses=refusals(404, 422))
def set_status(feedback_id: str, body: StatusBody, request: Request,
               who: Principal = Depends(require("his", "source"))) -> dict[str, Any]:  # noqa: B008
    """By the issuer's own systems only."""
    context = context_of(request)
    with context.database.begin() as conn:
        issuer = conn.execute(select(Feedback.result_issuer).where(Feedback.feedback_id == feedback_id)).scalar()
        if issuer is not None:
            same_institution(who, issuer, "feedback_id")
        changed = conn.execute(update(Feedback).where(Feedback.feedback_id == feedback_id).values(
            status=body.status, updated_at=datetime.now(UTC), published_at=None).returning(Feedback.id)).first()
        if changed is None:
            raise ApiError("feedback_id", f"no feedback {feedback_id!r}", 404)
        row = Session(conn).scalars(select(Feedback).where(Feedback.feedback_id == feedback_id)).one()
    outbox.relay_soon(context.database, context.publisher)
    return _as_dict(row)

"""The patient's own pages: their results, who accessed them, and their sharing blocks.

docs/rules.md, "Who may see what": a patient sees every access to their data — institution, department, role,
the clinician's name masked (张*), when, what, purpose and the break-glass flag — and may block the sharing of
their results from one hospital or of one category with other hospitals (audited like any change).
"""
from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select

from codes.calendar import beijing_iso
from exchange import audit
from exchange.api.access import require
from exchange.api.app import ApiError, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER, Timestamp
from exchange.api.patients import Timeline, timeline_of
from exchange.audit import Actor
from exchange.auth import relationship
from exchange.auth.principal import Principal
from exchange.store import StoredResult, current_results
from exchange.store.access import Account

router = APIRouter(prefix="/api/v1/me", tags=["patient"], responses=AUTHENTICATED)

PATIENT = require("patient", purpose="patient_request")


class Access(BaseModel):
    model_config = ANSWER

    at: Timestamp
    institution: str | None
    institution_name: str | None
    department: str | None
    role: str | None
    who: str | None = Field(description="the clinician's name masked (张*); null for the patient's own reads")
    what: str = Field(description="the action: `recognition.check`, `patient.results`, `decision.accept`, …")
    purpose: str
    break_glass: bool


class AccessLog(BaseModel):
    model_config = ANSWER

    patient: str
    accesses: list[Access] = Field(description="newest first; break-glass reads are flagged")


class BlockBody(BaseModel):
    issuer: str | None = Field(None, description="the hospital whose results are not to be shared; null: all")
    category: str | None = Field(None, description="the item category not to be shared; null: every one")


class BlockView(BaseModel):
    model_config = ANSWER

    id: int
    issuer: str | None
    category: str | None
    created_at: Timestamp


class Blocks(BaseModel):
    model_config = ANSWER

    blocks: list[BlockView] = Field(description="in force; break-glass reads are not held back by them")


def mask(name: str) -> str:
    """A person's name as the patient sees it: the first character, then one * per other character."""
    return name[:1] + "*" * max(1, len(name) - 1) if name else "*"


@router.get("/results", summary="My results across hospitals", response_model=Timeline, responses=refusals(422))
def my_results(request: Request, item: str | None = None, category: str | None = None,
               date_from: date | None = None, date_to: date | None = None,
               who: Principal = Depends(PATIENT)) -> dict[str, Any]:  # noqa: B008
    def own(conn: Connection) -> tuple[list[StoredResult], Actor]:
        return current_results(conn, who.id), who.actor("patient_request")

    return timeline_of(context_of(request), who.id, own, item, category, date_from, date_to)


@router.get("/access-log", summary="Who accessed my data, when, why (break-glass flagged)",
            response_model=AccessLog)
def access_log(request: Request, who: Principal = Depends(PATIENT)) -> dict[str, Any]:  # noqa: B008
    context = context_of(request)
    with context.database.begin() as conn:
        records = audit.trail(conn, who.id, 1000)
        people = {a.username: a.name for a in conn.execute(select(Account.username, Account.name).where(
            Account.username.in_({r["actor"] for r in records} | {r.get("on_behalf_of") for r in records
                                                                 if r.get("on_behalf_of")})))}
        audit.record(conn, who.actor("patient_request"), "patient.access_log", who.id, {"records": len(records)})
    accesses = []
    for r in records:
        clinician = r.get("on_behalf_of") or r["actor"]
        if r.get("role") == "patient":
            shown = None
        elif clinician in people:
            shown = mask(people[clinician])
        else:
            shown = mask(clinician)
        institution = context.book.institutions.get(r["institution"] or "")
        accesses.append({"at": r["at"], "institution": r["institution"],
                         "institution_name": institution.name_zh if institution else None,
                         "department": r.get("department"), "role": r.get("role"), "who": shown,
                         "what": r["action"], "purpose": r["purpose"], "break_glass": bool(r.get("break_glass"))})
    return {"patient": who.id, "accesses": accesses}


def _block_view(block: relationship.Block) -> dict[str, Any]:
    return {"id": block.id, "issuer": block.issuer, "category": block.category,
            "created_at": beijing_iso(block.created_at)}


@router.get("/blocks", summary="My sharing blocks", response_model=Blocks)
def list_blocks(request: Request, who: Principal = Depends(PATIENT)) -> dict[str, Any]:  # noqa: B008
    with context_of(request).database.connect() as conn:
        return {"blocks": [_block_view(b) for b in relationship.blocks(conn, who.id)]}


@router.post("/blocks", status_code=201, summary="Stop sharing my results from a hospital or of a category",
             response_model=BlockView, responses=refusals(422))
def add_block(body: BlockBody, request: Request, who: Principal = Depends(PATIENT)) -> dict[str, Any]:  # noqa: B008
    context = context_of(request)
    if body.issuer is not None and body.issuer not in context.book.institutions:
        raise ApiError("issuer", f"unknown institution {body.issuer!r}")
    categories = {i.category for i in context.book.items.values()}
    if body.category is not None and body.category not in categories:
        raise ApiError("category", f"unknown category {body.category!r}; known: {', '.join(sorted(categories))}")
    try:
        with context.database.begin() as conn:
            block = relationship.add_block(conn, who.id, body.issuer, body.category)
            audit.record(conn, who.actor("patient_request"), "patient.block", who.id,
                         {"block": block.id, "issuer": body.issuer, "category": body.category})
    except relationship.RelationshipError as exc:
        raise ApiError(exc.field, str(exc), exc.status) from None
    return _block_view(block)


@router.delete("/blocks/{block_id}", summary="Share again what a block held back", response_model=Blocks,
               responses=refusals(404, 422))
def remove_block(request: Request, block_id: int = Path(ge=1, le=2 ** 63 - 1),  # a BIGINT id
                 who: Principal = Depends(PATIENT)) -> dict[str, Any]:  # noqa: B008
    with context_of(request).database.begin() as conn:
        if not relationship.remove_block(conn, who.id, block_id):
            raise ApiError("block_id", f"no block {block_id} in force", 404)
        audit.record(conn, who.actor("patient_request"), "patient.unblock", who.id, {"block": block_id})
        return {"blocks": [_block_view(b) for b in relationship.blocks(conn, who.id)]}

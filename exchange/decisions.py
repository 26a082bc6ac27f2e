"""Clinician decisions on prior results: accept (互认), reject with a coded reason, revoke.

Rules (docs/rules.md, "Reason codes"): the receiving clinician decides; a rejection needs a reason code from
the code book, and a code marked ``note_required`` (08) an explanation of at most 200 characters; revoke undoes
the last decision on the same subject (requesting institution, encounter, result, item). Only a result
recognizable at decision time can be accepted.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from codes.book import ReasonCode
from codes.calendar import beijing_iso
from exchange.recognize import Prior, items_of, recognize
from exchange.store import StoredResult
from exchange.store.models import Decision, Result, ResultHead
from exchange.store.results import with_observations
from exchange.store.write import insert_returning

MAX_NOTE = 200


class DecisionError(ValueError):
    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


@dataclass(frozen=True)
class DecisionRequest:
    result_ref: str  # "<issuer>/<result_id>" as the check answer gives it in result.ref
    requesting_institution: str
    clinician_id: str
    encounter_id: str
    trigger: str
    decision: str
    item: str | None = None
    order_id: str | None = None
    reason_code: str | None = None
    note: str | None = None


def result_ref(issuer: str, result_id: str) -> str:
    return f"{issuer}/{result_id}"


def find_result(conn: Connection, ref: str) -> StoredResult | None:
    """The current version of the result named by ``ref``."""
    issuer, sep, result_id = ref.partition("/")
    if not sep or not issuer or not result_id:
        return None
    rows = conn.execute(
        select(Result.__table__).join(ResultHead.__table__, ResultHead.result_pk == Result.id)
        .where(ResultHead.issuer == issuer, ResultHead.result_id == result_id)).all()
    found = with_observations(conn, rows)
    return found[0] if found else None


def _subject(req: DecisionRequest, result: StoredResult, item: str | None) -> Any:
    return ((Decision.requesting_institution == req.requesting_institution)
            & (Decision.encounter_id == req.encounter_id) & (Decision.result_issuer == result.issuer)
            & (Decision.result_id == result.result_id)
            & (Decision.item_code.is_(None) if item is None else Decision.item_code == item))


def effective_decision(conn: Connection, req: DecisionRequest, result: StoredResult,
                       item: str | None) -> Decision | None:
    """The last accept/reject on the subject that no revoke has undone."""
    rows = Session(conn).scalars(select(Decision).where(_subject(req, result, item))
                                 .order_by(Decision.decided_at, Decision.id)).all()
    revoked = {r.revokes for r in rows if r.decision == "revoke"}
    live = [r for r in rows if r.decision != "revoke" and r.decision_id not in revoked]
    return live[-1] if live else None


def validate_reason(req: DecisionRequest, reasons: Mapping[str, ReasonCode]) -> None:
    """A rejection carries one of ``reasons`` (the code book's) and the note that reason requires; nothing else
    carries a reason; no note is longer than MAX_NOTE characters."""
    if req.decision == "reject":
        if not req.reason_code:
            raise DecisionError("reason_code", f"a rejection needs a reason code ({', '.join(reasons)})")
        reason = reasons.get(req.reason_code)
        if reason is None:
            raise DecisionError("reason_code", f"unknown reason code {req.reason_code!r}; "
                                f"known: {', '.join(reasons)}")
        if reason.note_required and not (req.note or "").strip():
            raise DecisionError("note", f"reason {req.reason_code} requires a note of at most {MAX_NOTE} characters")
    elif req.reason_code is not None:
        raise DecisionError("reason_code", f"a reason code goes only with a rejection, not with {req.decision}")
    if req.note is not None and len(req.note) > MAX_NOTE:
        raise DecisionError("note", f"note has {len(req.note)} characters; at most {MAX_NOTE}")


def decide(conn: Connection, book: Any, req: DecisionRequest, now: datetime) -> Decision:
    """Validate and store one decision inside the caller's transaction; raises DecisionError."""
    if req.requesting_institution not in book.institutions:
        raise DecisionError("requesting_institution", f"unknown institution {req.requesting_institution!r}")
    validate_reason(req, book.reason_codes)
    result = find_result(conn, req.result_ref)
    if result is None:
        raise DecisionError("result_id", f"no stored result {req.result_ref!r} (use result.ref from the check)", 404)
    items = {code: present for code, present in items_of(result)}
    item = req.item or result.unified_code
    if item not in items:
        raise DecisionError("item", f"result {req.result_ref} has no item {item!r}; it has "
                            f"{', '.join(c for c in items if c) or 'only unmapped codes'}")
    revokes = None
    if req.decision == "revoke":
        last = effective_decision(conn, req, result, item)
        if last is None:
            raise DecisionError("decision", "nothing to revoke: no standing decision on this result and item "
                                "in this encounter", 409)
        revokes = last.decision_id
    elif req.decision == "accept":
        answer = recognize(book, Prior(result.issuer, item, result.status, result.reported_at, items[item]),
                           req.requesting_institution, now)
        if not answer.recognizable:
            raise DecisionError("result_id", f"result {req.result_ref} item {item} is {answer.status.value} for "
                                f"{req.requesting_institution} now and cannot be accepted: {answer.reasons[0].en}")
    row = {"decision_id": str(uuid.uuid4()), "result_issuer": result.issuer, "result_id": result.result_id,
           "result_version": result.version, "item_code": item, "patient": result.patient,
           "requesting_institution": req.requesting_institution, "clinician_id": req.clinician_id,
           "encounter_id": req.encounter_id, "order_id": req.order_id, "trigger": req.trigger,
           "decision": req.decision, "reason_code": req.reason_code, "note": req.note, "revokes": revokes,
           "decided_at": now, "published_at": None}
    ((pk,),) = insert_returning(conn, Decision.__table__, [row], ("id",))
    return Decision(id=pk, **row)


def as_dict(d: Decision) -> dict[str, Any]:
    return {"decision_id": d.decision_id, "result": {"ref": result_ref(d.result_issuer, d.result_id),
            "version": d.result_version, "item": d.item_code}, "patient": d.patient,
            "requesting_institution": d.requesting_institution, "clinician_id": d.clinician_id,
            "encounter_id": d.encounter_id, "order_id": d.order_id, "trigger": d.trigger, "decision": d.decision,
            "reason_code": d.reason_code, "note": d.note, "revokes": d.revokes,
            "decided_at": beijing_iso(d.decided_at)}

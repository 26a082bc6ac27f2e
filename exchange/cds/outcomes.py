"""The CDS Hooks feedback endpoint's outcomes as the clinician's decisions (CDS Hooks 2.0, "Feedback").

- ``accepted``: the clinician reuses the prior result → an ``accept`` decision on the card's result and item;
- ``overridden`` with an ``overrideReason`` whose ``reason`` is one of the card's ``overrideReasons`` (a reason
  code of the code book) → a ``reject`` decision with that reason code; ``overrideReason.userComment`` is its
  note, which reason 08 requires (docs/rules.md, "Reason codes");
- ``overridden`` without a reason: the override is counted, but no decision is made (a rejection needs a reason).

Each card is decided once: the first feedback on a card records its outcome, and a replay of it (a client
retrying, or a second feedback on the same card) changes nothing and decides nothing again.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from exchange.cds.cards import REASON_CODE_SYSTEM
from exchange.cds.context import HookRequestError
from exchange.decisions import DecisionError, DecisionRequest, decide, result_ref
from exchange.store.models import Decision, IssuedCard
from exchange.store.write import insert

OUTCOMES = ("accepted", "overridden")


@dataclass(frozen=True)
class Outcome:
    """What one feedback entry came to: the card, the decision made (None for a replay or a reason-less
    override), and whether it replayed an outcome already recorded."""

    card: IssuedCard
    outcome: str  # as first recorded: a replay does not change it
    decision: Decision | None
    replay: bool


def issue(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Record the cards of one hook answer (in the answer's transaction)."""
    if rows:
        insert(conn, IssuedCard.__table__, rows)


def find_card(conn: Connection, card_uuid: str, service_id: str, institution: str | None) -> IssuedCard:
    """The card this service issued to ``institution`` under ``card_uuid``; 404 otherwise (a card issued to
    another institution is not told apart from one never issued)."""
    found = Session(conn).scalars(select(IssuedCard).where(IssuedCard.card_uuid == card_uuid,
                                                           IssuedCard.service_id == service_id)).first()
    if found is None or (institution is not None and found.requesting_institution != institution):
        raise HookRequestError("feedback.card", f"no card {card_uuid} was issued by {service_id} to "
                               f"{institution or 'this caller'}", 404)
    return found


def reason_code(book: Any, override_reason: dict[str, Any] | None, where: str) -> tuple[str | None, str | None]:
    """The reason code and the note of an ``overrideReason`` (None, None without one)."""
    if not override_reason:
        return None, None
    coding = override_reason.get("reason")
    comment = override_reason.get("userComment")
    note = comment.strip() if isinstance(comment, str) and comment.strip() else None
    if not isinstance(coding, dict) or not coding.get("code"):
        if note is not None:
            raise HookRequestError(f"{where}.reason", "a userComment needs a reason: one of the card's "
                                   "overrideReasons")
        return None, None
    system = coding.get("system")
    if system not in (None, REASON_CODE_SYSTEM):
        raise HookRequestError(f"{where}.reason.system", f"unknown reason system {system!r}; the card's "
                               f"overrideReasons are in {REASON_CODE_SYSTEM}")
    code = str(coding["code"])
    if code not in book.reason_codes:
        raise HookRequestError(f"{where}.reason.code", f"unknown reason code {code!r}; known: "
                               f"{', '.join(book.reason_codes)}")
    return code, note


def record(conn: Connection, book: Any, card: IssuedCard, *, outcome: str, reason: str | None, note: str | None,
           clinician: str, at: datetime, where: str = "feedback[0]") -> Outcome:
    """Record the card's outcome and make its decision, once; raises :class:`HookRequestError`."""
    claimed = conn.execute(update(IssuedCard).where(IssuedCard.id == card.id, IssuedCard.outcome.is_(None))
                           .values(outcome=outcome, override_reason=reason, outcome_at=at)).rowcount
    if not claimed:  # decided already (this feedback replayed, or another one first): nothing more to do
        first = conn.execute(select(IssuedCard.outcome).where(IssuedCard.id == card.id)).scalar_one()
        return Outcome(card, first, None, True)
    if outcome == "overridden" and reason is None:
        return Outcome(card, outcome, None, False)
    try:
        decision = decide(conn, book, DecisionRequest(
            result_ref=result_ref(card.result_issuer, card.result_id), requesting_institution=card.requesting_institution,
            clinician_id=clinician, encounter_id=card.encounter_key,
            trigger="encounter" if card.hook == "patient-view" else "order",
            decision="accept" if outcome == "accepted" else "reject", item=card.item_code, order_id=card.order_id,
            reason_code=reason, note=note), at)
    except DecisionError as exc:
        field = {"note": f"{where}.overrideReason.userComment", "reason_code": f"{where}.overrideReason.reason",
                 "result_id": f"{where}.card"}.get(exc.field, exc.field)
        # A result no longer recognizable cannot be accepted: a conflict with what is recorded, not bad input.
        raise HookRequestError(field, exc.message, 409 if exc.field == "result_id" and exc.status == 422
                               else 400 if exc.status == 422 else exc.status) from None
    conn.execute(update(IssuedCard).where(IssuedCard.id == card.id).values(decision_id=decision.decision_id))
    return Outcome(card, outcome, decision, False)

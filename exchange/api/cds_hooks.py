"""CDS Hooks 2.0: ``GET /cds-services`` (discovery), ``POST /cds-services/{id}`` (a hook) and
``POST /cds-services/{id}/feedback`` (the clinician's outcome on a card). See :mod:`exchange.cds`.

Authorization, as the specification leaves it to the service and as the JSON API does: the CDS client is the
hospital's HIS/EHR, authenticated by the exchange's own bearer token (``Authorization: Bearer`` from ``POST
/api/v1/auth/token``, role ``his``); no token, or an unknown one: 401. The clinician is the one
``X-HRX-On-Behalf-Of`` names, else ``context.userId`` (feedback: else the clinician the card was issued to).
``fhirServer`` and ``fhirAuthorization`` are accepted and not used: the exchange answers from its own store and
never calls back into the EHR's FHIR server, so the access token the client offers for it is never used nor
kept. Reading the patient's results needs the treatment relationship of the JSON check (an open encounter at
the caller's institution, one the HIS names in ``context.encounterId``, or a break-glass window): without it,
403 and no cards. Every hook call and every feedback is audited in the transaction that reads the data.

Discovery lists services, not patient data: it is open, as CDS clients call it before they are configured.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from codes.calendar import BEIJING
from exchange import audit, outbox
from exchange.api.access import PUBLIC, acting_for, name_encounter, patient_read, require, withhold_blocked
from exchange.api.app import ApiError, Context, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER
from exchange.api.recognition import evaluate
from exchange.auth.principal import Principal
from exchange.cds import outcomes
from exchange.cds.cards import card
from exchange.cds.context import HookRequestError, clinician_of, draft_orders, patient_pseudonym
from exchange.cds.services import PATIENT_PREFETCH_KEY, SERVICES, Service
from exchange.cds.wording import language_of
from exchange.recognize import Answer, best, items_of
from exchange.store import StoredResult, current_results
from exchange.store.models import Presentation
from exchange.store.write import DO_NOTHING, insert

router = APIRouter(tags=["cds-hooks"])

_OPEN = ConfigDict(extra="allow")  # requests: the specification lets clients add extensions anywhere


# -- discovery ---------------------------------------------------------------------------------------------------

class ServiceView(BaseModel):
    model_config = ANSWER

    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str] = Field(description="prefetch templates: the patient, for a resident ID")


class Discovery(BaseModel):
    model_config = ANSWER

    services: list[ServiceView]


@router.get("/cds-services", summary="CDS Hooks discovery: the services and their prefetch templates",
            response_model=Discovery)
def discovery(request: Request, _: None = Depends(PUBLIC)) -> dict[str, Any]:
    language = language_of(request.headers.get("Accept-Language"), context_of(request).cds_language)
    return {"services": [s.discovery(language) for s in SERVICES.values()]}


# -- a hook call -------------------------------------------------------------------------------------------------

class HookContext(BaseModel):
    """The hook's context (patient-view, order-select, order-sign); other fields are allowed and ignored."""

    model_config = _OPEN

    userId: str | None = Field(None, description="the clinician: `Practitioner/<id>` (unless X-HRX-On-Behalf-Of "
                               "names one)")
    patientId: str = Field(description="the exchange's patient pseudonym, unless the prefetched Patient carries "
                           "the resident ID")
    encounterId: str | None = Field(None, max_length=64, description="counts each result once per encounter and, "
                                    "named by a HIS, registers the encounter as the JSON check does")
    selections: list[str] | None = Field(None, description="order-select: the newly selected orders "
                                         "(`ServiceRequest/<id>`)")
    draftOrders: dict[str, Any] | None = Field(None, description="order-select / order-sign: a Bundle of the "
                                               "draft orders")


class HookRequest(BaseModel):
    model_config = _OPEN

    hook: str
    hookInstance: str = Field(max_length=64)
    fhirServer: str | None = Field(None, description="accepted, not used: the exchange answers from its own store")
    fhirAuthorization: dict[str, Any] | None = Field(None, description="accepted, ignored and never kept")
    context: HookContext
    prefetch: dict[str, Any] | None = None


class Coding(BaseModel):
    model_config = ANSWER

    system: str
    code: str
    display: str


class Action(BaseModel):
    model_config = ANSWER

    type: Literal["delete"]
    description: str
    resourceId: str = Field(description="the draft order to remove: `ServiceRequest/<id>`")


class Suggestion(BaseModel):
    model_config = ANSWER

    label: str
    uuid: str
    isRecommended: bool
    actions: list[Action]


class Link(BaseModel):
    model_config = ANSWER

    label: str
    url: str
    type: Literal["absolute"]


class Source(BaseModel):
    model_config = ANSWER

    label: str


class Card(BaseModel):
    model_config = ANSWER

    uuid: str = Field(description="what the feedback names as `card`")
    summary: str = Field(max_length=140)
    detail: str = Field(description="markdown: the result, its issuer, report time and valid-until (Beijing time)")
    indicator: Literal["info", "warning"]
    source: Source
    suggestions: list[Suggestion] | None = Field(None, description="order hooks: delete the duplicate draft order")
    selectionBehavior: Literal["at-most-one"] | None = None
    overrideReasons: list[Coding] = Field(description="the reason codes for repeating a test")
    links: list[Link]


class HookAnswer(BaseModel):
    model_config = ANSWER

    cards: list[Card]


def _ui_base(context: Context, request: Request) -> str:
    return context.ui_base_url or f"{str(request.base_url).rstrip('/')}/ui"


def _refused(exc: HookRequestError) -> ApiError:
    return ApiError(exc.field, exc.message, exc.status)


def _chosen(service: Service, evaluated: list[tuple[Answer, StoredResult]], orders: list[Any] | None
            ) -> list[tuple[Answer, StoredResult, Any]]:
    """The priors to show: per draft order, the best recognizable prior of its item; for patient-view, the best
    recognizable prior of each item."""
    if orders is None:
        items = dict.fromkeys(a.item_code for a, _ in evaluated if a.recognizable)
        found = (best([(a, r) for a, r in evaluated if a.item_code == item]) for item in items)
        return [(a, r, None) for a, r in (f for f in found if f is not None)]
    chosen = []
    for order in orders:
        if order.item_code is None:
            continue
        prior = best([(a, r) for a, r in evaluated if a.item_code == order.item_code])
        if prior is not None:
            chosen.append((prior[0], prior[1], order))
    return chosen


@router.post("/cds-services/{service_id}", summary="CDS Hooks: call a service (patient-view, order-select, "
             "order-sign)", response_model=HookAnswer, response_model_exclude_none=True,
             responses={**AUTHENTICATED, **refusals(400, 404, 412, 422)})
def call_service(service_id: str, body: HookRequest, request: Request,
                 who: Principal = Depends(require("clinician", "his", purpose="order_check",  # noqa: B008
                                                  clinician_in_body=True))) -> dict[str, Any]:
    """Cards for the prior results the caller's institution may reuse now: per duplicate draft order (order
    hooks), or every reusable prior (patient-view)."""
    context = context_of(request)
    book = context.book
    service = SERVICES.get(service_id)
    if service is None:
        raise ApiError("service_id", f"no CDS service {service_id!r} (GET /cds-services lists them)", 404)
    if body.hook != service.hook:
        raise ApiError("hook", f"service {service.id} answers the {service.hook} hook, not {body.hook!r}", 400)
    institution = who.institution or ""
    if institution not in book.institutions:
        raise ApiError(None, f"{who.role} {who.id} acts for no institution of the code book", 403)
    who = acting_for(who, clinician_of(body.context.userId), "context.userId")
    language = language_of(request.headers.get("Accept-Language"), context.cds_language)
    try:
        pseudonym = patient_pseudonym(context.pseudonymizer, body.context.patientId,
                                      (body.prefetch or {}).get(PATIENT_PREFETCH_KEY))
        orders = None
        if service.trigger == "order":
            if body.context.draftOrders is None:
                raise HookRequestError("context.draftOrders", f"{service.hook} sends the draft orders")
            selections = body.context.selections if service.hook == "order-select" else None
            orders = draft_orders(book, institution, body.context.draftOrders, selections)
    except HookRequestError as exc:
        raise _refused(exc) from None
    check_id = str(uuid.uuid4())
    encounter_key = body.context.encounterId or f"cds:{body.hookInstance}"[:64]
    name_encounter(context.database, who, pseudonym, body.context.encounterId)
    at = datetime.now(BEIJING)
    ui_base = _ui_base(context, request)
    with context.database.begin() as conn:  # the read, the cards issued, presentations and audit: one transaction
        access = patient_read(conn, who, pseudonym)
        stored, withheld = withhold_blocked(conn, book, current_results(conn, pseudonym), pseudonym, who, access)
        relevant = stored
        if orders is not None:  # only the results that speak for an ordered item need judging
            wanted = {o.item_code for o in orders if o.item_code is not None}
            relevant = [r for r in stored if any(code in wanted for code, _ in items_of(r))]
        evaluated, problems = evaluate(book, relevant, institution, at, context.recognition_memo)
        chosen = _chosen(service, evaluated, orders)
        cards = [card(book, answer, result, language=language, ui_base=ui_base, order=order)
                 for answer, result, order in chosen]
        now = datetime.now(UTC)
        clinician = who.on_behalf_of or who.id
        outcomes.issue(conn, [
            {"card_uuid": c["uuid"], "service_id": service.id, "hook": service.hook,
             "hook_instance": body.hookInstance, "requesting_institution": institution, "clinician_id": clinician,
             "encounter_key": encounter_key, "patient": pseudonym, "result_issuer": r.issuer,
             "result_id": r.result_id, "result_version": r.version, "item_code": a.item_code,
             "order_id": order.order_id[:64] if order is not None and order.order_id else None, "issued_at": now,
             "outcome": None, "override_reason": None, "decision_id": None, "outcome_at": None}
            for c, (a, r, order) in zip(cards, chosen)])
        insert(conn, Presentation.__table__, [
            {"check_id": check_id, "requesting_institution": institution, "encounter_key": encounter_key,
             "patient": pseudonym, "result_issuer": r.issuer, "result_id": r.result_id, "result_version": r.version,
             "item_code": a.item_code, "tier": a.tier, "trigger": service.trigger, "presented_at": now}
            for a, r, _ in chosen], on_conflict=DO_NOTHING)
        purpose = "emergency" if access.break_glass else "order_check" if orders is not None else "treatment"
        audit.record(conn, who.actor(purpose, break_glass=access.break_glass), f"cds.{service.hook}", pseudonym, {
            "check_id": check_id, "service": service.id, "hook_instance": body.hookInstance,
            "orders": [{"order": o.reference, "item": o.item_code} for o in orders] if orders is not None else None,
            "results": len(stored), "cards": [c["uuid"] for c in cards], "withheld": withheld,
            "problems": problems or None})
    return {"cards": cards}


# -- feedback ----------------------------------------------------------------------------------------------------

class OverrideReason(BaseModel):
    model_config = _OPEN

    reason: dict[str, Any] | None = Field(None, description="one of the card's overrideReasons (a Coding)")
    userComment: str | None = Field(None, description="the clinician's comment: the note reason 08 requires")


class AcceptedSuggestion(BaseModel):
    model_config = _OPEN

    id: str


class FeedbackEntry(BaseModel):
    model_config = _OPEN

    card: str = Field(max_length=64, description="the card's uuid")
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: AwareDatetime


class FeedbackRequest(BaseModel):
    model_config = _OPEN

    feedback: list[FeedbackEntry] = Field(min_length=1)


class FeedbackRecorded(BaseModel):
    model_config = ANSWER

    card: str
    outcome: Literal["accepted", "overridden"] = Field(description="the card's outcome as first recorded")
    decision_id: str | None = Field(description="the decision the feedback became (null: an override without a "
                                    "reason, or a replay)")
    replay: bool = Field(description="the card's outcome was recorded before: nothing was decided again")


class FeedbackAnswer(BaseModel):
    model_config = ANSWER

    feedback: list[FeedbackRecorded]


@router.post("/cds-services/{service_id}/feedback", summary="CDS Hooks feedback: accepted → accept decision, "
             "overridden with a reason → reject decision", response_model=FeedbackAnswer,
             responses={**AUTHENTICATED, **refusals(400, 404, 409, 422)})
def feedback(service_id: str, body: FeedbackRequest, request: Request,
             who: Principal = Depends(require("clinician", "his", purpose="treatment",  # noqa: B008
                                              clinician_in_body=True))) -> dict[str, Any]:
    """Every entry or none: the outcomes and decisions of one feedback are committed together."""
    context = context_of(request)
    if service_id not in SERVICES:
        raise ApiError("service_id", f"no CDS service {service_id!r} (GET /cds-services lists them)", 404)
    recorded = []
    now = datetime.now(UTC)
    try:
        with context.database.begin() as conn:
            for i, entry in enumerate(body.feedback):
                where = f"feedback[{i}]"
                issued = outcomes.find_card(conn, entry.card, service_id, who.institution)
                acting = acting_for(who, issued.clinician_id, f"{where}.card")
                override = entry.overrideReason.model_dump(exclude_none=True) if entry.overrideReason else None
                reason, note = outcomes.reason_code(context.book, override, f"{where}.overrideReason")
                if entry.outcome == "accepted" and reason is not None:
                    raise HookRequestError(f"{where}.overrideReason", "an accepted card has no override reason")
                access = patient_read(conn, acting, issued.patient)
                done = outcomes.record(conn, context.book, issued, outcome=entry.outcome, reason=reason, note=note,
                                       clinician=acting.on_behalf_of or acting.id, at=now, where=where)
                audit.record(conn, acting.actor("treatment", break_glass=access.break_glass), "cds.feedback",
                             issued.patient, {
                                 "service": service_id, "card": entry.card, "outcome": entry.outcome,
                                 "reason_code": reason, "decision_id": done.decision.decision_id
                                 if done.decision else None, "replay": done.replay,
                                 "outcome_timestamp": entry.outcomeTimestamp.isoformat()})
                recorded.append({"card": entry.card, "outcome": done.outcome,
                                 "decision_id": done.decision.decision_id if done.decision else None,
                                 "replay": done.replay})
    except HookRequestError as exc:
        raise _refused(exc) from None
    outbox.relay_soon(context.database, context.publisher)
    return {"feedback": recorded}

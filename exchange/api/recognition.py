"""``POST /api/v1/recognition/check``: the encounter reminder and the order-time duplicate reminder."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field, model_validator

from codes.calendar import BEIJING
from exchange import audit
from exchange.api.access import name_encounter, patient_read, require, same_institution, withhold_blocked
from exchange.api.app import ApiError, Context, context_of
from exchange.api.check_answer import CheckAnswer
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.auth.principal import Principal
from exchange.decisions import result_ref
from schemas.resident_id import InvalidResidentId
from exchange.recognize import Answer, RecognitionMemo, Recognizer, best, items_of
from exchange.store import StoredResult, current_results, pipelined, write
from exchange.store.models import Presentation

router = APIRouter(prefix="/api/v1", tags=["recognition"], responses=AUTHENTICATED)


class PatientRef(BaseModel):
    """The patient, by resident ID (pseudonymized on arrival, never stored) or by pseudonym."""

    resident_id: str | None = Field(None, description="居民身份证号 (18 characters, GB 11643 check digit)")
    pseudonym: str | None = Field(None, pattern="^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one(self) -> PatientRef:
        if (self.resident_id is None) == (self.pseudonym is None):
            raise ValueError("give exactly one of resident_id or pseudonym")
        return self


class CheckRequest(BaseModel):
    patient: PatientRef
    requesting_institution: str = Field(description="institution id of the requesting hospital")
    items: list[str] | None = Field(None, description="unified item codes being ordered (order-time check)")
    at: AwareDatetime | None = Field(None, description="the moment of the check; default now")
    clinician_id: str | None = Field(None, max_length=64)
    encounter_id: str | None = Field(None, max_length=64, description="counts each result once per encounter")


def patient_pseudonym(context: Context, patient: PatientRef) -> str:
    """The pseudonym of the patient reference; a resident ID is pseudonymized here and never kept."""
    if patient.resident_id is None:
        return patient.pseudonym  # type: ignore[return-value]
    try:
        return context.pseudonymizer.pseudonym(patient.resident_id)
    except InvalidResidentId as exc:
        raise ApiError("patient.resident_id", str(exc)) from None


def _recognition(answer: Answer) -> dict[str, Any]:
    """One answer as the check shows it. Datetimes are left to orjson, which writes them in C, exactly as
    ``isoformat()`` would (RFC 3339); the status is a ``StrEnum`` and reasons are already ``{"zh": …, "en": …}``
    dicts, which orjson writes as they are."""
    return {"status": answer.status, "tier": answer.tier, "catalogue_id": answer.catalogue_id,
            "catalogue_version": answer.catalogue_version, "valid_until": answer.valid_until, "via": answer.via,
            "reasons": answer.reasons}


class _Entries:
    """Builds answer entries (for orjson: datetimes are left as they are). What describes a result (its part
    and its values) is built once even when it speaks for several items; so is each item and each answer that
    does not depend on the report time."""

    def __init__(self, context: Context, tz: tzinfo) -> None:
        self.book = context.book
        self.tz = tz  # instants are given in the requester's offset (docs/rules.md, "Dates")
        self._results: dict[int, tuple[dict[str, Any], list[dict[str, Any]] | None]] = {}
        self._last: tuple[Any, tuple[dict[str, Any], list[dict[str, Any]] | None]] = (None, ({}, None))
        self._items: dict[tuple[str | None, str], dict[str, Any]] = {}
        self._wanted: dict[str, frozenset[str]] = {}  # an item and its panel components
        self._shared: dict[int, dict[str, Any]] = {}  # answers memoized across results: one dict each

    def _item(self, code: str | None, local_code: str) -> dict[str, Any]:
        item = self.book.items.get(code) if code else None
        found = self._items[(code, local_code)] = {
            "code": code, "name_zh": item.name_zh if item else None, "name_en": item.name_en if item else None,
            "local_code": local_code}
        return found

    def _describe(self, result: StoredResult) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        found = self._results.get(result.pk)
        if found is None:
            issuer = self.book.institutions.get(result.issuer)
            part = {"ref": result_ref(result.issuer, result.result_id), "issuer": result.issuer,
                    "issuer_name": issuer.name_zh if issuer else None, "result_id": result.result_id,
                    "version": result.version, "kind": result.kind, "status": result.status,
                    "reported_at": result.reported_at.astimezone(self.tz),
                    "collected_at": result.collected_at.astimezone(self.tz) if result.collected_at else None}
            values = [{"item": o.unified_code, "local_code": o.local_code, "value": o.value,
                       "value_text": o.value_text, "unit": o.unit,
                       "reference_range": {"low": o.ref_low, "high": o.ref_high, "text": o.ref_text},
                       "interpretation": o.interpretation}
                      for o in result.observations] if result.kind == "lab" else None
            found = self._results[result.pk] = (part, values)
        self._last = (result, found)
        return found

    def __call__(self, result: StoredResult, answer: Answer) -> dict[str, Any]:
        code = answer.item_code
        last, described = self._last  # a result's items come in a row
        part, values = described if last is result else self._describe(result)
        item = self._items.get((code, result.local_code))
        if answer.valid_until is not None:  # depends on the report time: this result's own answer
            recognition = _recognition(answer)
        else:
            recognition = self._shared.get(id(answer))
            if recognition is None:
                recognition = self._shared[id(answer)] = _recognition(answer)
        entry: dict[str, Any] = {"result": part, "item": item if item is not None else self._item(code, result.local_code),
                                 "recognition": recognition}
        if values is None:  # imaging: the report, the retrieval pointer and the study from the stored event
            event = result.event
            entry["report"] = event.get("report")
            entry["retrieval"] = event.get("retrieval")
            entry["study"] = event.get("study")
        elif code is None or code == result.unified_code:
            entry["values"] = values  # the report's own item (or unmapped): every value of the report
        else:
            wanted = self._wanted.get(code)
            if wanted is None:
                listed = self.book.items.get(code)
                wanted = self._wanted[code] = frozenset((code, *(listed.components if listed else ())))
            entry["values"] = [v for v in values if v["item"] in wanted]
        return entry


def evaluate(book: Any, stored: list[StoredResult], requester: str, at: datetime,
             memo: RecognitionMemo | None = None) -> tuple[list[tuple[Answer, StoredResult]], list[str]]:
    """Every item of every stored result judged for ``requester`` at ``at``, and what could not be judged (the
    check's and the CDS services' one evaluation)."""
    evaluated: list[tuple[Answer, StoredResult]] = []
    problems: list[str] = []
    answer_for = Recognizer(book, requester, at, memo).answer
    for result in stored:
        for code, present in items_of(result):
            try:
                answer = answer_for(result.issuer, code, result.status, result.reported_at, present)
            except Exception as exc:  # noqa: BLE001 - one bad row must not hide the others: flag it instead
                problems.append(f"{result.issuer}/{result.result_id}: {exc!r}")
                continue
            evaluated.append((answer, result))
    return evaluated, problems


def _shown(evaluated: list[tuple[Answer, StoredResult]], items: list[str] | None) -> list[tuple[Answer, StoredResult]]:
    """What the clinician is presented as reusable: every recognizable item, or the best per ordered item."""
    if items is None:
        return [(a, r) for a, r in evaluated if a.recognizable]
    chosen = (best([(a, r) for a, r in evaluated if a.item_code == code]) for code in items)
    return [c for c in chosen if c is not None]


def _present(conn: Any, check_id: str, body: CheckRequest, pseudonym: str,
             shown: list[tuple[Answer, StoredResult]]) -> None:
    """Record what was presented: the denominator of the recognition rate, once per encounter."""
    now = datetime.now(UTC)
    rows = [{"check_id": check_id, "requesting_institution": body.requesting_institution,
             "encounter_key": body.encounter_id or f"check:{check_id}", "patient": pseudonym,
             "result_issuer": r.issuer, "result_id": r.result_id, "result_version": r.version,
             "item_code": a.item_code, "tier": a.tier, "trigger": "order" if body.items is not None else "encounter",
             "presented_at": now} for a, r in shown]
    write.insert(conn, Presentation.__table__, rows, on_conflict=write.DO_NOTHING)


def _answer(context: Context, body: CheckRequest, check_id: str, pseudonym: str, at: datetime,
            evaluated: list[tuple[Answer, StoredResult]], problems: list[str]) -> bytes:
    entry = _Entries(context, at.tzinfo or BEIJING)
    response: dict[str, Any] = {"check_id": check_id, "patient": {"pseudonym": pseudonym},
                                "requesting_institution": body.requesting_institution, "at": at.isoformat()}
    if body.items is None:
        response["trigger"] = "encounter"
        response["results"] = [entry(r, a) for a, r in evaluated]
    else:
        response["trigger"] = "order"
        ordered = []
        for code in body.items:
            candidates = [(a, r) for a, r in evaluated if a.item_code == code]
            chosen = best(candidates)
            ordered.append({"item": code, "recognizable": chosen is not None,
                            "best": entry(chosen[1], chosen[0]) if chosen else None,
                            "others": [entry(r, a) for a, r in candidates
                                       if chosen is None or not (a is chosen[0] and r is chosen[1])]})
        response["results"] = ordered
    response["complete"] = not problems
    if problems:
        response["incomplete_reason"] = "; ".join(problems)
    # Serialized directly: the answer is plain JSON types, and FastAPI's generic encoder costs more than the
    # whole recognition for a long history.
    return orjson.dumps(response)


@router.post("/recognition/check", summary="Which prior results may the requesting institution reuse now?",
             response_class=Response, response_model=None,  # the answer is orjson bytes; CheckAnswer describes it
             responses={200: {"model": CheckAnswer,
                              "description": "every prior result's items (encounter) or the priors per ordered item"},
                        **refusals(409, 422)})
def check(body: CheckRequest, request: Request,
          who: Principal = Depends(require("clinician", "his", purpose="order_check"))) -> Response:  # noqa: B008
    """Encounter reminder (no ``items``) or order-time duplicate reminder (``items``); the read is audited.

    Only for the caller's own institution, within a treatment relationship (an open encounter, one the HIS
    names in ``encounter_id``, or a break-glass window); results the patient blocked are left out."""
    context = context_of(request)
    book = context.book
    if body.requesting_institution not in book.institutions:
        raise ApiError("requesting_institution", f"unknown institution {body.requesting_institution!r}")
    same_institution(who, body.requesting_institution, "requesting_institution")
    for i, code in enumerate(body.items or ()):
        if code not in book.items:
            raise ApiError(f"items[{i}]", f"unknown unified item code {code!r}")
    pseudonym = patient_pseudonym(context, body.patient)
    at = body.at or datetime.now(BEIJING)  # without the requester's offset, answers are in Beijing time
    check_id = str(uuid.uuid4())
    name_encounter(context.database, who, pseudonym, body.encounter_id)
    with context.database.begin() as conn:  # the read, its audit record and the presentations: one transaction
        access = patient_read(conn, who, pseudonym)
        stored, withheld = withhold_blocked(conn, book, current_results(conn, pseudonym), pseudonym, who, access)
        purpose = "emergency" if access.break_glass else "order_check" if body.items else "treatment"
        evaluated, problems = evaluate(book, stored, body.requesting_institution, at, context.recognition_memo)
        shown = _shown(evaluated, body.items)
        # The answer goes out only once the audit and presentation rows are committed with the read (a failed
        # write raises here and nothing is shown). PostgreSQL: the rows are sent first and travel while the
        # answer is built. SQLite: the answer is built before the first write, which holds the database's
        # only write lock (the engine's too) until the commit.
        with pipelined(conn) as overlapping:
            answer = None if overlapping else _answer(context, body, check_id, pseudonym, at, evaluated, problems)
            _present(conn, check_id, body, pseudonym, shown)
            if answer is None:
                answer = _answer(context, body, check_id, pseudonym, at, evaluated, problems)
            # The audit row last: on PostgreSQL the chain's lock is held from its insert to the commit, so
            # concurrent checks wait for each other's commit, not for each other's answers.
            audit.record(conn, who.actor(purpose, break_glass=access.break_glass), "recognition.check", pseudonym, {
                "check_id": check_id, "requesting_institution": body.requesting_institution,
                "items": body.items, "results": len(stored), "recognizable": len(shown), "withheld": withheld})
    return Response(answer, media_type="application/json")

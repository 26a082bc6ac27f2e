"""The treatment relationship from the hospital's side: encounters registered by the HIS, and break-glass.

docs/rules.md, "Who may see what": while a patient has an open encounter at an institution, that institution's
clinicians (and its HIS acting for them) may read the patient's results; break-glass opens a flagged,
time-boxed window on one patient without one.
"""
from __future__ import annotations

from datetime import UTC
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from exchange import audit, metrics
from exchange.api.access import require
from exchange.api.app import ApiError, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER, Timestamp
from exchange.api.recognition import PatientRef, patient_pseudonym
from exchange.auth import relationship
from exchange.auth.principal import Principal
from codes.calendar import beijing_iso

router = APIRouter(prefix="/api/v1", tags=["treatment relationship"], responses=AUTHENTICATED)


class EncounterBody(BaseModel):
    patient: PatientRef
    encounter_id: str = Field(min_length=1, max_length=64, description="the HIS's own encounter (visit) number")
    department: str | None = Field(None, max_length=64)
    start: AwareDatetime = Field(description="admission or registration")
    end: AwareDatetime | None = Field(None, description="discharge; null while the encounter is open")


class EncounterView(BaseModel):
    model_config = ANSWER

    institution: str
    encounter_id: str
    department: str | None
    start: Timestamp
    end: Timestamp | None
    created: bool = Field(description="false when an existing encounter was updated (e.g. its discharge)")


class BreakGlassBody(BaseModel):
    patient: PatientRef
    reason: str = Field(min_length=1, max_length=1000, description="why this is an emergency, in words")


class BreakGlassView(BaseModel):
    model_config = ANSWER

    patient: str
    expires_at: Timestamp = Field(description="every read until then is flagged in the audit, listed for the "
                                              "auditor's review and shown to the patient")


@router.post("/encounters", status_code=201, summary="Register or update a patient's encounter (HIS)",
             response_model=EncounterView, responses={200: {"model": EncounterView, "description": "updated"},
                                                      **refusals(409, 422)})
def post_encounter(body: EncounterBody, request: Request,
                   who: Principal = Depends(require("his", purpose="treatment"))) -> Any:  # noqa: B008
    context = context_of(request)
    pseudonym = patient_pseudonym(context, body.patient)
    institution = who.institution or ""
    try:
        with context.database.begin() as conn:
            created = relationship.register_encounter(
                conn, institution=institution, encounter_key=body.encounter_id, patient=pseudonym,
                department=body.department, starts_at=body.start, ends_at=body.end, registered_by=who.id)
            audit.record(conn, who.actor("treatment"), "encounter.register" if created else "encounter.update",
                         pseudonym, {"encounter_id": body.encounter_id, "department": body.department})
    except relationship.RelationshipError as exc:
        raise ApiError(exc.field, str(exc), exc.status) from None
    view = {"institution": institution, "encounter_id": body.encounter_id, "department": body.department,
            "start": beijing_iso(body.start), "end": beijing_iso(body.end) if body.end else None, "created": created}
    return view if created else JSONResponse(view, status_code=200)


@router.post("/break-glass", status_code=201, summary="Open an emergency access window on one patient",
             response_model=BreakGlassView, responses=refusals(422))
def break_glass(body: BreakGlassBody, request: Request,
                who: Principal = Depends(require("clinician", "his", purpose="emergency"))  # noqa: B008
                ) -> dict[str, Any]:
    context = context_of(request)
    pseudonym = patient_pseudonym(context, body.patient)
    try:
        with context.database.begin() as conn:
            until = relationship.open_break_glass(conn, who.on_behalf_of or who.id, who.institution or "",
                                                  pseudonym, body.reason)
            audit.record(conn, who.actor("emergency", break_glass=True), "break_glass.open", pseudonym,
                         {"reason": body.reason.strip(), "until": until.astimezone(UTC).isoformat()})
    except relationship.RelationshipError as exc:
        raise ApiError(exc.field, str(exc), exc.status) from None
    metrics.BREAK_GLASS_OPENS.inc()
    return {"patient": pseudonym, "expires_at": beijing_iso(until)}


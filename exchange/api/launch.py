"""Launching the clinician's pages from the HIS, the way a SMART on FHIR app is launched from an EHR.

``POST /api/v1/launch``: the HIS (a ``his`` client acting for one of its clinicians, ``X-HRX-On-Behalf-Of``)
asks for a launch token for a patient and an encounter, and opens ``/ui/launch?token=…`` in the clinician's
browser. ``POST /api/v1/launch/session``: the page redeems the token for a web session of that clinician, with
the patient and the encounter as its context, so the clinician never retypes an ID.

The token is signed (HMAC-SHA256 with the exchange's launch key), valid for ``LAUNCH_LIFETIME`` and redeemed
once: its digest is stored on first use, and a second use is refused. Issuing registers the named encounter
(the treatment relationship, as an order-time check naming it would); both steps are audited.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from exchange import audit
from exchange.api.access import PUBLIC, SESSION_COOKIE, require
from exchange.api.app import ApiError, context_of
from exchange.api.auth import PrincipalView, client_address, principal_view, refuse_if_throttled
from exchange.api.errors import AUTHENTICATED, Refusal, refusals
from exchange.api.fields import ANSWER, Pseudonym
from exchange.api.recognition import PatientRef, patient_pseudonym
from exchange.auth import accounts, relationship
from exchange.auth.principal import Principal

router = APIRouter(prefix="/api/v1", tags=["launch"])

LAUNCH_LIFETIME = timedelta(minutes=5)
#: Where the HIS opens the token: the launch page of exchange/web.
LAUNCH_PAGE = "/ui/launch"


class LaunchBody(BaseModel):
    patient: PatientRef
    encounter_id: str = Field(min_length=1, max_length=64, description="the HIS's own encounter (visit) number")


class LaunchAnswer(BaseModel):
    model_config = ANSWER

    token: str = Field(description="one use, within `expires_in` seconds")
    url: str = Field(description="the page to open in the clinician's browser (relative to the exchange's address)")
    expires_in: int = Field(description="seconds")


class RedeemBody(BaseModel):
    token: str = Field(min_length=1, max_length=2048)


class LaunchContext(BaseModel):
    model_config = ANSWER

    patient: Pseudonym
    encounter_id: str
    institution: str


class LaunchSession(BaseModel):
    model_config = ANSWER

    csrf_token: str = Field(description="echo it in X-CSRF-Token on every POST, PUT, PATCH and DELETE")
    expires_in: int
    principal: PrincipalView
    context: LaunchContext


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, claims: dict[str, Any]) -> str:
    """``<payload>.<signature>``, both base64url: the claims as JSON and their HMAC-SHA256 under ``key``."""
    payload = _b64(orjson.dumps(claims))
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def verify(key: bytes, token: str, now: datetime) -> dict[str, Any]:
    """The claims of a token this key signed and that has not expired; ValueError otherwise."""
    payload, dot, signature = token.partition(".")
    if not dot:
        raise ValueError("not a launch token")
    try:
        given = _unb64(signature)
    except (binascii.Error, ValueError):
        raise ValueError("not a launch token") from None
    expected = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):  # nothing unsigned is parsed
        raise ValueError("the launch token's signature does not match")
    claims = orjson.loads(_unb64(payload))
    if not isinstance(claims, dict):
        raise ValueError("not a launch token")
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now.timestamp():
        raise ValueError("the launch token has expired: launch again from the HIS")
    return claims


@router.post("/launch", status_code=201, summary="A one-use launch token for the clinician's pages (HIS)",
             response_model=LaunchAnswer, responses={**AUTHENTICATED, **refusals(422)})
def issue(body: LaunchBody, request: Request,
          who: Principal = Depends(require("his", purpose="treatment"))) -> dict[str, Any]:  # noqa: B008
    """For the clinician the HIS acts for (an enabled clinician account of the HIS's institution); the named
    encounter is registered open, as on an order-time check."""
    context = context_of(request)
    institution, clinician = who.institution or "", who.on_behalf_of or ""
    if not accounts.is_clinician_of(context.database, clinician, institution):
        raise ApiError("X-HRX-On-Behalf-Of", f"{clinician!r} is not an enabled clinician account of {institution}")
    pseudonym = patient_pseudonym(context, body.patient)
    now = datetime.now(UTC)
    expires = now + LAUNCH_LIFETIME
    claims = {"sub": clinician, "inst": institution, "pat": pseudonym, "enc": body.encounter_id,
              "exp": int(expires.timestamp()), "jti": secrets.token_urlsafe(16)}
    token = sign(context.launch_key, claims)
    try:
        with context.database.begin() as conn:
            relationship.register_named(conn, institution=institution, encounter_key=body.encounter_id,
                                        patient=pseudonym, registered_by=who.id)
            audit.record(conn, who.actor("treatment"), "launch.issue", pseudonym,
                         {"encounter_id": body.encounter_id, "jti": claims["jti"]})
    except relationship.RelationshipError as exc:
        raise ApiError(exc.field, str(exc), exc.status) from None
    return {"token": token, "url": f"{LAUNCH_PAGE}?token={token}", "expires_in": int(LAUNCH_LIFETIME.total_seconds())}


@router.post("/launch/session", summary="Redeem a launch token for the clinician's web session",
             response_model=LaunchSession, responses={
                 **refusals(401, 422), 429: {"model": Refusal, "description": "too many failed tries from this address"}})
def redeem(body: RedeemBody, request: Request, response: Response,
           _: None = Depends(PUBLIC)) -> dict[str, Any]:  # noqa: B008
    """Once per token, within its lifetime; sets the session cookie as ``POST /api/v1/auth/login`` does."""
    context = context_of(request)
    refuse_if_throttled(request)
    now = datetime.now(UTC)
    try:
        claims = verify(context.launch_key, body.token, now)
    except ValueError as exc:
        context.login_failures.failed(client_address(request))
        raise ApiError("token", str(exc), 401) from None
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    if not accounts.mark_used(context.database, body.token, claims["sub"], expires):
        raise ApiError("token", "this launch token was used already: launch again from the HIS", 401)
    try:
        principal, issued = accounts.launch_session(context.database, claims["sub"], claims["inst"])
    except accounts.LoginRefused as exc:
        raise ApiError("token", str(exc), 401) from None
    with context.database.begin() as conn:
        audit.record(conn, principal.actor("treatment"), "launch.redeem", claims["pat"],
                     {"encounter_id": claims["enc"], "jti": claims.get("jti")})
    response.set_cookie(SESSION_COOKIE, issued.token, max_age=int((issued.expires_at - now).total_seconds()),
                        httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
    return {"csrf_token": issued.csrf, "expires_in": int((issued.expires_at - now).total_seconds()),
            "principal": principal_view(principal),
            "context": {"patient": claims["pat"], "encounter_id": claims["enc"], "institution": claims["inst"]}}

"""Logging in: tokens for people and hospital systems (OAuth 2.0), web sessions, and patients' one-time codes.

``POST /api/v1/auth/token`` is an OAuth 2.0 token endpoint (RFC 6749): ``grant_type=password`` (people:
``username``, ``password``, and ``totp`` when the role needs a second factor) or ``grant_type=client_credentials``
(hospital systems: ``client_id`` and ``client_secret`` in the form or as HTTP Basic). The answer is a bearer
token (RFC 6750). ``POST /api/v1/auth/login`` is the same check for the web pages: it sets an HttpOnly,
SameSite=Strict session cookie and returns the CSRF token the page echoes in ``X-CSRF-Token``.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Form, Request, Response
from pydantic import BaseModel, Field

from exchange import metrics
from exchange.api.access import ANY_ROLE, PUBLIC, SESSION_COOKIE, require
from exchange.api.app import ApiError, context_of
from exchange.api.errors import AUTHENTICATED, Refusal, refusals
from exchange.api.fields import ANSWER
from exchange.api.recognition import PatientRef, patient_pseudonym
from exchange.auth import accounts, patient_codes
from exchange.auth.principal import Principal

router = APIRouter(prefix="/api/v1", tags=["login"])
_REFUSED = {**refusals(401, 422), 429: {"model": Refusal,
                                          "description": "locked after repeated failures, or asked too often"}}


class TokenAnswer(BaseModel):
    model_config = ANSWER

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="seconds")
    role: str
    institution: str | None


class PrincipalView(BaseModel):
    model_config = ANSWER

    id: str
    role: str
    name: str | None
    institution: str | None
    department: str | None
    scope: str | None


class SessionAnswer(BaseModel):
    model_config = ANSWER

    csrf_token: str = Field(description="echo it in X-CSRF-Token on every POST, PUT, PATCH and DELETE")
    expires_in: int
    principal: PrincipalView


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    totp: str | None = Field(None, max_length=16, description="the authenticator's code, when the role needs one")


class CodeRequest(BaseModel):
    patient: PatientRef


class CodeLogin(BaseModel):
    patient: PatientRef
    code: str = Field(min_length=1, max_length=16)


def principal_view(principal: Principal) -> dict[str, Any]:
    """What a signed-in caller may know of itself (``PrincipalView``): never a credential."""
    return {"id": principal.id, "role": principal.role, "name": principal.name, "institution": principal.institution,
            "department": principal.department, "scope": principal.scope}


def _seconds(until: datetime) -> int:
    return max(0, int((until - datetime.now(UTC)).total_seconds()))


def _refused(request: Request, exc: accounts.LoginRefused) -> ApiError:
    if exc.locked_until is not None:
        return ApiError(None, f"locked until {exc.locked_until.isoformat()} after repeated failures", 429)
    context_of(request).login_failures.failed(client_address(request))
    return ApiError(None, str(exc), 401)


def client_address(request: Request) -> str:
    """The peer address failed logins are counted against (exchange.auth.throttle)."""
    return request.client.host if request.client else "unknown"


@contextmanager
def counted_login(grant: str) -> Iterator[None]:
    """Count one login attempt of ``grant`` (exchange.metrics): ok, throttled (429: the address or the account
    is locked out) or refused (any other refusal)."""
    try:
        yield
    except ApiError as exc:
        metrics.LOGINS.labels(grant, "throttled" if exc.status == 429 else "refused").inc()
        raise
    metrics.LOGINS.labels(grant, "ok").inc()


def refuse_if_throttled(request: Request) -> None:
    """429 for an address past the failed-login limit (exchange.auth.throttle), before any credential is read."""
    wait = context_of(request).login_failures.retry_after(client_address(request))
    if wait is not None:
        raise ApiError(None, f"too many failed logins from this address: retry in {int(wait) + 1} s", 429)


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, secret


@router.post("/auth/token", summary="OAuth 2.0 token endpoint: password (people) or client_credentials (systems)",
             response_model=TokenAnswer, responses=_REFUSED)
def token(request: Request, grant_type: Literal["password", "client_credentials"] = Form(),
          username: str | None = Form(None, max_length=64), password: str | None = Form(None, max_length=1024),
          totp: str | None = Form(None, max_length=16), client_id: str | None = Form(None, max_length=64),
          client_secret: str | None = Form(None, max_length=256),
          _: None = Depends(PUBLIC)) -> dict[str, Any]:  # noqa: B008
    with counted_login(grant_type):
        return _token(request, grant_type, username, password, totp, client_id, client_secret)


def _token(request: Request, grant_type: str, username: str | None, password: str | None, totp: str | None,
           client_id: str | None, client_secret: str | None) -> dict[str, Any]:
    database = context_of(request).database
    refuse_if_throttled(request)
    try:
        if grant_type == "password":
            if not username or not password:
                raise ApiError("username", "grant_type=password needs username and password")
            principal, issued = accounts.login(database, username, password, totp)
        else:
            basic = _basic(request)
            client_id, client_secret = basic if basic else (client_id, client_secret)
            if not client_id or not client_secret:
                raise ApiError("client_id", "grant_type=client_credentials needs client_id and client_secret")
            principal, issued = accounts.client_token(database, client_id, client_secret)
    except accounts.LoginRefused as exc:
        raise _refused(request, exc) from None
    return {"access_token": issued.token, "token_type": "bearer", "expires_in": _seconds(issued.expires_at),
            "role": principal.role, "institution": principal.institution}


@router.post("/auth/login", summary="Log a person in for the web pages: a session cookie and its CSRF token",
             response_model=SessionAnswer, responses=_REFUSED)
def login(body: LoginBody, request: Request, response: Response,
          _: None = Depends(PUBLIC)) -> dict[str, Any]:  # noqa: B008
    with counted_login("session"):
        refuse_if_throttled(request)
        try:
            principal, issued = accounts.login(context_of(request).database, body.username, body.password,
                                               body.totp, session_cookie=True)
        except accounts.LoginRefused as exc:
            raise _refused(request, exc) from None
    response.set_cookie(SESSION_COOKIE, issued.token, max_age=_seconds(issued.expires_at), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    return {"csrf_token": issued.csrf, "expires_in": _seconds(issued.expires_at), "principal": principal_view(principal)}


class Done(BaseModel):
    model_config = ANSWER

    done: bool


@router.post("/auth/logout", summary="End this session or revoke this bearer token", response_model=Done,
             responses=AUTHENTICATED)
def logout(request: Request, response: Response,
           _: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:  # noqa: B008
    header = request.headers.get("authorization", "")
    presented = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(SESSION_COOKIE)
    if presented:
        accounts.revoke_token(context_of(request).database, presented)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"done": True}


@router.get("/auth/me", summary="Who the token or session stands for", response_model=PrincipalView,
            responses=AUTHENTICATED)
def me(who: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:  # noqa: B008
    return principal_view(who)


@router.post("/patient/code", status_code=202, summary="Send a patient a one-time login code",
             response_model=Done, responses={**_REFUSED, 503: {"model": Refusal,
                                                               "description": "no code sender configured"}})
def send_code(body: CodeRequest, request: Request, _: None = Depends(PUBLIC)) -> dict[str, Any]:  # noqa: B008
    context = context_of(request)
    if body.patient.resident_id is None:
        raise ApiError("patient.resident_id", "a patient logs in with their resident ID")
    if context.code_sender is None:
        raise ApiError(None, "this exchange has no one-time code sender configured", 503)
    pseudonym = patient_pseudonym(context, body.patient)
    try:
        patient_codes.send_code(context.database, context.code_sender, body.patient.resident_id, pseudonym)
    except patient_codes.CodeRefused as exc:
        raise ApiError(None, str(exc), 429) from None
    return {"done": True}


@router.post("/patient/token", summary="A patient's bearer token, for their resident ID and one-time code",
             response_model=TokenAnswer, responses=_REFUSED)
def patient_token(body: CodeLogin, request: Request, _: None = Depends(PUBLIC)) -> dict[str, Any]:  # noqa: B008
    context = context_of(request)
    if body.patient.resident_id is None:
        raise ApiError("patient.resident_id", "a patient logs in with their resident ID")
    with counted_login("patient_code"):
        refuse_if_throttled(request)
        pseudonym = patient_pseudonym(context, body.patient)
        try:
            patient_codes.redeem_code(context.database, pseudonym, body.code)
        except patient_codes.CodeRefused as exc:
            context.login_failures.failed(client_address(request))
            raise ApiError("code", str(exc), 401) from None
    issued = accounts.issue_patient_token(context.database, pseudonym)
    return {"access_token": issued.token, "token_type": "bearer", "expires_in": _seconds(issued.expires_at),
            "role": "patient", "institution": None}


"""Every route's access rule: who must be authenticated, in which role, for which purpose of use.

A route takes its caller as ``who: Principal = Depends(require("clinician", "his", purpose="treatment"))``, or
declares itself open with ``Depends(PUBLIC)``; :func:`rule_of` finds the rule of any route, and the test of
every route refuses one without a rule. The caller is authenticated by a bearer token (``Authorization:
Bearer …``, from ``POST /api/v1/auth/token``) or by the web session cookie, whose unsafe requests (POST, PUT,
PATCH, DELETE) must carry the session's CSRF token in ``X-CSRF-Token``. No token: 401. A role the route does
not admit, or a role whose purposes do not include the route's: 403, with the reason.

A ``his`` client acts for one of its institution's clinicians and names them on every call that reads or
writes patient data, in ``X-HRX-On-Behalf-Of``; the audit records both. That header is the only caller-stated
identity the exchange accepts, and only from an authenticated ``his`` client.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Depends, Request
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from exchange import metrics
from exchange.api.app import ApiError, context_of
from exchange.auth import accounts, relationship
from exchange.auth.credentials import token_digest
from exchange.auth.principal import Principal
from exchange.auth.roles import roles
from exchange.recognize import items_of
from exchange.stats import scope_within

SESSION_COOKIE = "hrx_session"
CSRF_HEADER = "X-CSRF-Token"
ON_BEHALF_HEADER = "X-HRX-On-Behalf-Of"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_bearer = HTTPBearer(auto_error=False, description="a token from POST /api/v1/auth/token")


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal | None:
    """The principal of a bearer token or of the session cookie (CSRF-checked on unsafe methods), or None."""
    database = context_of(request).database
    if credentials is not None:
        presented = _resolve(database, credentials.credentials)
        return presented.principal if presented is not None and not presented.session else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    presented = _resolve(database, cookie)
    if presented is None or not presented.session:
        return None
    if request.method in _UNSAFE:
        given = request.headers.get(CSRF_HEADER, "")
        if not presented.csrf_digest or not hmac.compare_digest(presented.csrf_digest, token_digest(given)):
            raise ApiError(CSRF_HEADER, "missing or wrong CSRF token for this session", 403)
    return presented.principal


def _resolve(database: Engine, token: str) -> accounts.Presented | None:
    try:
        return accounts.resolve(database, token)
    except SQLAlchemyError as exc:  # not a refusal of the caller: the store is down
        raise ApiError(None, f"the store is unavailable; retry later ({type(exc).__name__})", 503) from None


@dataclass(frozen=True)
class AccessRule:
    """Which roles a route admits and for which purpose of use; ``public`` routes admit anyone."""

    roles: tuple[str, ...]
    purpose: str | None
    public: bool = False
    #: A route whose request names the clinician in a standard's own field (CDS Hooks' ``context.userId``, the
    #: clinician a card was issued to): a ``his`` client may leave out ``X-HRX-On-Behalf-Of``, and the route
    #: then names the clinician with :func:`acting_for` before it reads or writes patient data.
    clinician_in_body: bool = False

    def __call__(self, request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
                 ) -> Principal | None:
        if self.public:
            return None
        try:
            return self._admit(request, credentials)
        except ApiError as exc:
            if exc.status in (401, 403):
                metrics.REFUSALS.labels(str(exc.status)).inc()
            raise

    def _admit(self, request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        principal = authenticate(request, credentials)
        if principal is None:
            raise ApiError(None, "authentication required: a bearer token or a session", 401)
        if principal.role not in self.roles:
            raise ApiError(None, f"role {principal.role} may not use this route (allowed: {', '.join(self.roles)})",
                           403)
        if self.purpose is not None and self.purpose not in roles()[principal.role].purposes:
            raise ApiError(None, f"role {principal.role} may not act for the purpose {self.purpose}", 403)
        # a HIS acting under a clinician's purposes (roles.yaml) acts for a named clinician
        if principal.role == "his" and self.purpose in roles()["clinician"].purposes:
            clinician = request.headers.get(ON_BEHALF_HEADER, "").strip()
            if not clinician:
                if self.clinician_in_body:
                    return principal
                raise ApiError(ON_BEHALF_HEADER, "a HIS names the clinician it acts for", 403)
            principal = replace(principal, on_behalf_of=clinician[:64])
        return principal


def require(*allowed: str, purpose: str | None = None, clinician_in_body: bool = False) -> AccessRule:
    unknown = [r for r in allowed if r not in roles()]
    if unknown or not allowed:
        raise ValueError(f"unknown roles {unknown}" if unknown else "a rule names at least one role")
    return AccessRule(tuple(allowed), purpose, clinician_in_body=clinician_in_body)


def acting_for(who: Principal, clinician: str | None, field: str) -> Principal:
    """A ``his`` caller of a :attr:`AccessRule.clinician_in_body` route, acting for the clinician its header
    named or else ``clinician`` (what the request's body names); 403 when neither names one."""
    if who.role != "his" or who.on_behalf_of:
        return who
    if not clinician:
        raise ApiError(field, f"a HIS names the clinician it acts for ({ON_BEHALF_HEADER} or {field})", 403)
    return replace(who, on_behalf_of=clinician[:64])


PUBLIC = AccessRule((), None, public=True)
#: Every role: for reference data (catalogues, items, institutions, reason codes) any authenticated caller reads.
ANY_ROLE = tuple(roles())

def rule_of(route: APIRoute) -> AccessRule | None:
    """The access rule among a route's dependencies (at any depth), or None."""
    pending: list[Any] = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if isinstance(dependency.call, AccessRule):
            return dependency.call
        pending.extend(dependency.dependencies)
    return None


def same_institution(who: Principal, institution: str | None, field: str) -> None:
    """403 unless ``institution`` is the caller's own (people and systems bound to an institution)."""
    if who.institution is not None and institution != who.institution:
        raise ApiError(field, f"{who.role} {who.id} acts for {who.institution}, not {institution}", 403)



def name_encounter(database: Engine, who: Principal, pseudonym: str, encounter_key: str | None) -> None:
    """An encounter a HIS names on an order-time check counts as registered (docs/rules.md, "Who may see
    what"). Committed on its own, before the check's read: on SQLite the read's transaction must not take the
    write lock before the answer is built."""
    if who.role != "his" or not encounter_key:
        return
    try:
        with database.begin() as conn:
            relationship.register_named(conn, institution=who.institution or "", encounter_key=encounter_key,
                                        patient=pseudonym, registered_by=who.id)
    except relationship.RelationshipError as exc:
        raise ApiError(exc.field, str(exc), exc.status) from None


def patient_read(conn: Connection, who: Principal, pseudonym: str) -> relationship.Access:
    """Why ``who`` may read this patient's results now, or 403 with the reason (docs/rules.md, "Who may see
    what"): an open encounter at the caller's institution, or the clinician's break-glass window on the
    patient."""
    institution = who.institution or ""
    access = relationship.treatment_access(conn, principal_id=who.on_behalf_of or who.id,
                                           institution=institution, patient=pseudonym)
    if access is None:
        raise ApiError(None, f"no treatment relationship: the patient has no open encounter at {institution} "
                       "(register one with POST /api/v1/encounters), and no break-glass window is open", 403)
    return access


def withhold_blocked(conn: Connection, book: Any, results: list[Any], pseudonym: str, who: Principal,
                     access: relationship.Access) -> tuple[list[Any], int]:
    """The results a patient's sharing blocks leave visible to ``who`` (all of them in break-glass), and how
    many were withheld."""
    if access.break_glass or not access.blocks:
        return results, 0
    found = relationship.blocks(conn, pseudonym)
    shown = []
    for result in results:
        categories = {book.items[c].category for c, _ in items_of(result) if c in book.items}
        if not relationship.is_blocked(found, issuer=result.issuer, categories=categories,
                                       reader_institution=who.institution):
            shown.append(result)
    return shown, len(results) - len(shown)


def within_scope(who: Principal, book: Any, scope: str | None, field: str) -> str:
    """The scope asked for (the caller's own when none is), or 403 when it reaches beyond the caller's."""
    asked = scope if scope not in (None, "") else who.scope
    if not scope_within(book, asked, who.scope):
        raise ApiError(field, f"{who.role} {who.id} has scope {who.scope}, which does not cover {asked}", 403)
    return asked or "national"


def same_clinician(who: Principal, clinician_id: str) -> None:
    """403 unless ``clinician_id`` is the caller (a clinician) or the clinician a HIS acts for."""
    acting = who.on_behalf_of if who.role == "his" else who.id
    if clinician_id != acting:
        raise ApiError("clinician_id", f"clinician_id {clinician_id!r} is not the authenticated clinician "
                       f"({acting})", 403)

"""Accounts (people), clients (hospital systems) and the tokens they are given once they prove who they are.

Rules (docs/rules.md, "Who may see what"):

- A person logs in with account name and password, plus a TOTP code when the role requires a second factor
  (operator, auditor, admin). ``MAX_FAILED_LOGINS`` failures in a row lock the account for ``LOCKOUT``; the
  answer to a locked account does not say whether the password was right.
- A hospital system authenticates with its client id and secret (OAuth 2.0 client credentials, RFC 6749
  §4.4); a revoked client, or the old secret after a rotation, is refused.
- Either gets a bearer token (RFC 6750) valid for ``TOKEN_LIFETIME``; a browser gets a session cookie instead,
  valid for ``SESSION_LIFETIME``, whose unsafe requests must echo the session's CSRF token.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.orm import Session

from exchange.auth import credentials
from exchange.auth.principal import Principal
from exchange.auth.roles import person_roles, roles, system_roles
from exchange.store.access import Account, Client, Token

_Row = TypeVar("_Row", Account, Client)

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
TOKEN_LIFETIME = timedelta(minutes=30)
SESSION_LIFETIME = timedelta(hours=8)


class AccountError(ValueError):
    """An account or client request that cannot be carried out (unknown role, duplicate name, …)."""


class LoginRefused(Exception):
    """Credentials not accepted. ``locked_until`` is set when the account is locked (the caller says so)."""

    def __init__(self, message: str, locked_until: datetime | None = None) -> None:
        super().__init__(message)
        self.locked_until = locked_until


@dataclass(frozen=True)
class Issued:
    """A token just issued: the value to hand over (never stored) and when it expires."""

    token: str
    expires_at: datetime
    csrf: str | None = None  # sessions only


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _session(database: Engine) -> Iterator[Session]:
    with Session(database) as session, session.begin():
        yield session


# --- accounts --------------------------------------------------------------------------------------------------

def add_user(database: Engine, username: str, role: str, name: str, password: str, *,
             institution: str | None = None, department: str | None = None, scope: str | None = None) -> str | None:
    """Create an account; returns the TOTP secret when the role needs a second factor (shown once)."""
    if role not in person_roles():
        raise AccountError(f"role {role!r} is not a person's role: one of {', '.join(person_roles())}")
    if role == "clinician" and not institution:
        raise AccountError("a clinician belongs to an institution (--institution)")
    if role in ("operator", "auditor") and not scope:
        raise AccountError(f"an {role} has a scope (--scope): national, a region, alliance, province, city or "
                           "institution")
    problem = credentials.password_problem(password)
    if problem:
        raise AccountError(problem)
    totp = credentials.new_totp_secret() if roles()[role].second_factor else None
    with _session(database) as session:
        if session.get(Account, username) is not None:
            raise AccountError(f"account {username!r} exists already")
        session.add(Account(username=username, role=role, name=name, institution=institution,
                            department=department, scope=scope, password_hash=credentials.hash_secret(password),
                            totp_secret=totp, failed_logins=0, disabled=False, created_at=_now()))
    return totp


def set_password(database: Engine, username: str, password: str) -> None:
    """Reset a password: unlocks the account and ends its sessions and tokens."""
    problem = credentials.password_problem(password)
    if problem:
        raise AccountError(problem)
    with _session(database) as session:
        account = _account(session, username)
        account.password_hash = credentials.hash_secret(password)
        account.failed_logins, account.locked_until = 0, None
        _revoke_tokens(session, "account", username)


def disable_user(database: Engine, username: str) -> None:
    with _session(database) as session:
        _account(session, username).disabled = True
        _revoke_tokens(session, "account", username)


def list_users(database: Engine) -> list[Account]:
    return _all(database, Account, Account.username)


def _all(database: Engine, model: type[_Row], order: Any) -> list[_Row]:
    with Session(database) as session:
        return list(session.scalars(select(model).order_by(order)))


def _account(session: Session, username: str) -> Account:
    return _one(session, Account, username, "account")


def _one(session: Session, model: type[_Row], key: str, what: str) -> _Row:
    row = session.get(model, key)
    if row is None:
        raise AccountError(f"no {what} {key!r}")
    return row


def login(database: Engine, username: str, password: str, totp: str | None, *, session_cookie: bool = False
          ) -> tuple[Principal, Issued]:
    """Check a person's credentials and issue a bearer token (or a session); raise LoginRefused."""
    now = _now()
    with _session(database) as session:
        account = session.get(Account, username, with_for_update=True)
        if account is None or account.disabled:
            credentials.secret_matches(_DUMMY_HASH, password)  # the same time as a real check: no user probing
            raise LoginRefused("unknown account or wrong password")
        if account.locked_until is not None and account.locked_until > now:
            raise LoginRefused("account locked after repeated failures", account.locked_until)
        ok = credentials.secret_matches(account.password_hash, password)
        if ok and account.totp_secret is not None:
            step = credentials.totp_step(account.totp_secret, totp, account.totp_step)
            ok = step is not None
            if ok:
                account.totp_step = step
        if not ok:
            account.failed_logins += 1
            if account.failed_logins >= MAX_FAILED_LOGINS:
                account.locked_until, account.failed_logins = now + LOCKOUT, 0
        else:
            account.failed_logins, account.locked_until = 0, None
            principal = account_principal(account)
            issued = _issue(session, "account", username, session_cookie)
    if not ok:
        raise LoginRefused("unknown account, wrong password or wrong second-factor code")
    return principal, issued


_DUMMY_HASH = credentials.hash_secret("not a password of anyone")


def account_principal(account: Account) -> Principal:
    return Principal(id=account.username, role=account.role, institution=account.institution,
                     department=account.department, scope=account.scope, name=account.name)


# --- clients ---------------------------------------------------------------------------------------------------

def add_client(database: Engine, client_id: str, role: str, institution: str, name: str) -> str:
    """Register a hospital system; returns its secret (shown once, kept only as a hash)."""
    if role not in system_roles():
        raise AccountError(f"role {role!r} is not a system's role: one of {', '.join(system_roles())}")
    secret = credentials.new_token()
    with _session(database) as session:
        if session.get(Client, client_id) is not None:
            raise AccountError(f"client {client_id!r} exists already")
        session.add(Client(client_id=client_id, role=role, institution=institution, name=name,
                           secret_hash=credentials.hash_secret(secret), created_at=_now()))
    return secret


def rotate_client(database: Engine, client_id: str) -> str:
    """A new secret; the old one and every token issued under it stop working at once."""
    secret = credentials.new_token()
    with _session(database) as session:
        client = _client(session, client_id)
        if client.revoked_at is not None:
            raise AccountError(f"client {client_id!r} is revoked")
        client.secret_hash, client.rotated_at = credentials.hash_secret(secret), _now()
        _revoke_tokens(session, "client", client_id)
    return secret


def revoke_client(database: Engine, client_id: str) -> None:
    with _session(database) as session:
        _client(session, client_id).revoked_at = _now()
        _revoke_tokens(session, "client", client_id)


def list_clients(database: Engine) -> list[Client]:
    return _all(database, Client, Client.client_id)


def _client(session: Session, client_id: str) -> Client:
    return _one(session, Client, client_id, "client")


def client_token(database: Engine, client_id: str, secret: str) -> tuple[Principal, Issued]:
    """OAuth 2.0 client credentials: a bearer token for a registered, unrevoked client."""
    with _session(database) as session:
        client = session.get(Client, client_id)
        if client is None or client.revoked_at is not None:
            credentials.secret_matches(_DUMMY_HASH, secret)
            raise LoginRefused("unknown or revoked client")
        if not credentials.secret_matches(client.secret_hash, secret):
            raise LoginRefused("wrong client secret")
        return client_principal(client), _issue(session, "client", client_id, False)


def client_principal(client: Client) -> Principal:
    return Principal(id=client.client_id, role=client.role, institution=client.institution, name=client.name)


# --- tokens ----------------------------------------------------------------------------------------------------

def _issue(session: Session, kind: str, principal_id: str, session_cookie: bool,
           lifetime: timedelta | None = None) -> Issued:
    token, now = credentials.new_token(), _now()
    csrf = credentials.new_token() if session_cookie else None
    expires = now + (lifetime or (SESSION_LIFETIME if session_cookie else TOKEN_LIFETIME))
    session.add(Token(digest=credentials.token_digest(token), principal_kind=kind, principal_id=principal_id,
                      session=session_cookie, csrf_digest=credentials.token_digest(csrf) if csrf else None,
                      issued_at=now, expires_at=expires, revoked=False))
    return Issued(token, expires, csrf)


def is_clinician_of(database: Engine, username: str, institution: str) -> bool:
    """Whether ``username`` is an enabled clinician account of ``institution``."""
    with Session(database) as session:
        account = session.get(Account, username)
        return (account is not None and not account.disabled and account.role == "clinician"
                and account.institution == institution)


def launch_session(database: Engine, username: str, institution: str) -> tuple[Principal, Issued]:
    """A web session for a clinician the HIS of ``institution`` launched the pages for (exchange.api.launch):
    the HIS vouched for the clinician, so no password is asked; the account must still be an enabled clinician
    of that institution. Raises LoginRefused."""
    with _session(database) as session:
        account = session.get(Account, username)
        if account is None or account.disabled or account.role != "clinician" or account.institution != institution:
            raise LoginRefused(f"{username!r} is not an enabled clinician account of {institution}")
        return account_principal(account), _issue(session, "account", username, True)


def mark_used(database: Engine, token: str, principal_id: str, expires_at: datetime) -> bool:
    """Record a one-use credential (a launch token) as spent; False when it was spent already. Kept as a revoked
    token row: its digest is the key, so a second use collides, and a revoked row never authenticates."""
    from sqlalchemy.exc import IntegrityError

    try:
        with _session(database) as session:
            session.add(Token(digest=credentials.token_digest(token), principal_kind="launch",
                              principal_id=principal_id[:64], session=False, csrf_digest=None, issued_at=_now(),
                              expires_at=expires_at, revoked=True))
    except IntegrityError:
        return False
    return True


def issue_patient_token(database: Engine, pseudonym: str) -> Issued:
    with _session(database) as session:
        return _issue(session, "patient", pseudonym, False)


def _revoke_tokens(session: Session, kind: str, principal_id: str) -> None:
    session.execute(update(Token).where(Token.principal_kind == kind, Token.principal_id == principal_id)
                    .values(revoked=True))


def revoke_token(database: Engine, token: str) -> None:
    with _session(database) as session:
        session.execute(update(Token).where(Token.digest == credentials.token_digest(token)).values(revoked=True))


@dataclass(frozen=True)
class Presented:
    """The principal behind a presented token, and the CSRF digest when it is a session."""

    principal: Principal
    session: bool
    csrf_digest: str | None


#: Built once: constructing the statement cost more than running it.
_RESOLVE = (select(Token.principal_kind, Token.principal_id, Token.session, Token.csrf_digest,
                   Account.role, Account.name, Account.institution, Account.department, Account.scope,
                   Account.disabled, Client.role.label("client_role"), Client.name.label("client_name"),
                   Client.institution.label("client_institution"), Client.revoked_at)
            .outerjoin(Account, (Token.principal_kind == "account") & (Account.username == Token.principal_id))
            .outerjoin(Client, (Token.principal_kind == "client") & (Client.client_id == Token.principal_id))
            .where(Token.digest == bindparam("digest"), Token.revoked.is_(False),
                   Token.expires_at > bindparam("now", type_=Token.expires_at.type)))


def resolve(database: Engine, token: str) -> Presented | None:
    """The principal a token stands for, or None when it is unknown, expired or revoked, or its account or
    client was disabled or revoked since. One query: every authenticated request asks it."""
    with database.connect() as conn:
        row = conn.execute(_RESOLVE, {"digest": credentials.token_digest(token), "now": _now()}).first()
    if row is None:
        return None
    if row.principal_kind == "account":
        if row.role is None or row.disabled:
            return None
        principal = Principal(id=row.principal_id, role=row.role, institution=row.institution,
                              department=row.department, scope=row.scope, name=row.name)
    elif row.principal_kind == "client":
        if row.client_role is None or row.revoked_at is not None:
            return None
        principal = Principal(id=row.principal_id, role=row.client_role, institution=row.client_institution,
                              name=row.client_name)
    else:
        principal = Principal(id=row.principal_id, role="patient")
    return Presented(principal, row.session, row.csrf_digest)

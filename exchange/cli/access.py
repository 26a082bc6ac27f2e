"""``hrx users`` and ``hrx clients``: the accounts of people and the registered hospital systems (admin)."""
from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click


def _database():  # type: ignore[no-untyped-def]
    from exchange import runtime
    from exchange.config import Settings

    return runtime.database(Settings.from_env())


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@contextmanager
def _refused() -> Iterator[None]:
    """An account or client request the rules refuse: its reason on stderr, exit status 2."""
    from exchange.auth.accounts import AccountError

    try:
        yield
    except AccountError as exc:
        _fail(exc)


def _password(given: str | None) -> str:
    if given is not None:
        return given
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        _fail(ValueError("the passwords differ"))
    return first


@click.group("users")
def users_group() -> None:
    """People's accounts: clinicians, operators, auditors, admins (patients log in with a one-time code)."""


@users_group.command("add")
@click.argument("username")
@click.option("--role", required=True, help="clinician, operator, auditor or admin")
@click.option("--name", required=True, help="the person's name (shown masked to patients: 张*)")
@click.option("--institution", help="a clinician's institution id")
@click.option("--department")
@click.option("--scope", help="an operator's or auditor's scope: national, region, alliance, province/city code or "
                              "institution")
@click.option("--password", help="otherwise asked for (not echoed)")
def users_add(username: str, role: str, name: str, institution: str | None, department: str | None,
              scope: str | None, password: str | None) -> None:
    """Create an account; prints the TOTP enrolment URI when the role needs a second factor."""
    from exchange.auth import accounts
    from exchange.auth.credentials import totp_uri

    with _refused():
        totp = accounts.add_user(_database(), username, role, name, _password(password), institution=institution,
                                 department=department, scope=scope)
    click.echo(f"account {username} ({role}) created")
    if totp:
        click.echo(f"second factor: add this to an authenticator app (shown once):\n  {totp_uri(totp, username)}")


@users_group.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Disable an account and end its sessions."""
    from exchange.auth import accounts

    with _refused():
        accounts.disable_user(_database(), username)
    click.echo(f"account {username} disabled")


@users_group.command("reset-password")
@click.argument("username")
@click.option("--password", help="otherwise asked for (not echoed)")
def users_reset_password(username: str, password: str | None) -> None:
    """Set a new password; unlocks the account and ends its sessions."""
    from exchange.auth import accounts

    with _refused():
        accounts.set_password(_database(), username, _password(password))
    click.echo(f"password of {username} reset")


@users_group.command("list")
def users_list() -> None:
    from exchange.auth import accounts

    for a in accounts.list_users(_database()):
        state = "disabled" if a.disabled else "locked" if a.locked_until else "active"
        where = a.institution or a.scope or "-"
        click.echo(f"{a.username}\t{a.role}\t{where}\t{a.department or '-'}\t{state}\t{a.name}")


@click.group("clients")
def clients_group() -> None:
    """Hospital systems (HIS, result sources) and their client credentials."""


@clients_group.command("add")
@click.argument("client_id")
@click.option("--role", required=True, help="his (order-time checks for its clinicians) or source (publishes)")
@click.option("--institution", required=True, help="the one institution this system acts for")
@click.option("--name", default="", help="what the system is (e.g. 'HIS of hospital A')")
def clients_add(client_id: str, role: str, institution: str, name: str) -> None:
    """Register a system; prints its secret once (kept only as a hash)."""
    from exchange import runtime
    from exchange.auth import accounts
    from exchange.config import Settings

    settings = Settings.from_env()
    if institution not in runtime.codebook(settings).institutions:
        _fail(ValueError(f"unknown institution {institution!r}"))
    with _refused():
        secret = accounts.add_client(runtime.database(settings), client_id, role, institution, name or client_id)
    click.echo(f"client {client_id} ({role} for {institution}) registered\nsecret (shown once): {secret}")


@clients_group.command("rotate")
@click.argument("client_id")
def clients_rotate(client_id: str) -> None:
    """A new secret; the old one and its tokens stop working at once."""
    from exchange.auth import accounts

    with _refused():
        secret = accounts.rotate_client(_database(), client_id)
    click.echo(f"new secret of {client_id} (shown once): {secret}")


@clients_group.command("revoke")
@click.argument("client_id")
def clients_revoke(client_id: str) -> None:
    from exchange.auth import accounts

    with _refused():
        accounts.revoke_client(_database(), client_id)
    click.echo(f"client {client_id} revoked")


@clients_group.command("list")
def clients_list() -> None:
    from exchange.auth import accounts

    for c in accounts.list_clients(_database()):
        state = "revoked" if c.revoked_at else "active"
        click.echo(f"{c.client_id}\t{c.role}\t{c.institution}\t{state}\t{c.name}")

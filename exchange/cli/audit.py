"""``hrx audit``: check that the audit trail is as it was written (exchange.audit_chain)."""
from __future__ import annotations

import click

from exchange.config import Settings


@click.group("audit")
def audit_group() -> None:
    """The audit trail: verify its hash chain."""


@audit_group.command("verify")
@click.option("--database", "database_url", metavar="URL",
              help="the store (default: HRX_DATABASE_URL, else the running hrx up's, else var/hrx.db — as hrx serve)")
def audit_verify(database_url: str | None) -> None:
    """Walk the audit chain in order and recompute every record's digests. Exit 0 and print the number of
    records and the head digest when the chain is intact; exit 1 naming the first broken link (a record changed,
    removed or moved); exit 2 when the store cannot be read.

    The chain shows tampering only relative to a head kept elsewhere: whoever can write the table can rewrite
    it and compute a new, consistent chain, or cut records off its end. Record the printed head outside the
    database (a ticket, a signed log, another institution) and compare a later run's chain against it.
    """
    from sqlalchemy.exc import DBAPIError

    from exchange.audit_chain import verify
    from exchange.store import connect

    url = database_url or Settings.from_env().effective_database_url
    engine = connect(url)
    try:
        with engine.begin() as conn:
            found = verify(conn)
    except DBAPIError as exc:
        click.echo(f"无法读取审计链 / cannot read the audit chain (is the store migrated?): {exc.orig}", err=True)
        raise SystemExit(2) from None
    finally:
        engine.dispose()
    if found.broken is None:
        click.echo(f"OK: {found.records} records, head {found.head}")
        return
    click.echo(f"审计链断裂 / audit chain broken at {found.broken}")
    click.echo(f"{found.records} records intact before it, head {found.head}")
    raise SystemExit(1)

"""``hrx migrate``: bring the store's schema to this version's revision, as its own deployment step.

The API, the engines and the listeners only check the revision and refuse to start on another one
(exchange.runtime.database); ``hrx up`` migrates its own stack once before starting its parts.
"""
from __future__ import annotations

import click

from exchange.config import Settings


@click.command()
@click.option("--check", is_flag=True,
              help="change nothing: exit 0 when the store is at this version's revision, 1 when it is not")
@click.option("--topics", is_flag=True,
              help="also create the Kafka topics on HRX_KAFKA_BOOTSTRAP (HRX_TOPIC_PARTITIONS, "
                   "HRX_TOPIC_REPLICATION_FACTOR); existing topics are left as they are")
def migrate(check: bool, topics: bool) -> None:
    """Upgrade the store (HRX_DATABASE_URL) to the newest schema revision; idempotent.

    Run it once per deployment, and after each upgrade of hrx, before starting `hrx serve`, `hrx engine` and
    the listeners: they refuse to start on a store at another revision.
    """
    from exchange import runtime
    from exchange.store import StoreNotMigrated, connect, require_current

    settings = Settings.from_env()
    if check:
        database = connect(settings.effective_database_url)
        try:
            found = require_current(database)
        except StoreNotMigrated as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            database.dispose()
        click.echo(f"store at schema revision {found.current}, as this version expects")
        return
    database = runtime.migrated_database(settings)
    found = require_current(database)
    database.dispose()
    click.echo(f"store at schema revision {found.current}")
    if topics:
        from exchange.broker import ensure_topics

        created = ensure_topics(runtime.require_bootstrap(settings), settings.partitions, settings.topic_replication)
        click.echo("topics: " + ", ".join(f"{t}×{n}" for t, n in settings.partitions.items())
                   + f" ({settings.topic_replication} cop{'y' if settings.topic_replication == 1 else 'ies'} each; "
                   f"created now: {', '.join(created) or 'none'})")

"""Connecting to the store, and its schema's revision: brought up to date by one step (``hrx migrate``, or
``hrx up`` for its embedded stack) and only checked by every other process.

Migrating is a deployment step of its own: several API and engine processes starting at once against one
store must not each run the same migrations (they would race on PostgreSQL's DDL locks, and an old image
started beside a new one would quietly run against a schema it does not know).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the API read while the engine writes; FULL makes a committed transaction survive power loss,
    # which is what a positive acknowledgement promises.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def connect(url: str) -> Engine:
    """An Engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://…``), tuned for the store."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    # Sessions in UTC whatever the server's default: timestamps come back as aware UTC datetimes, which the
    # store's UTCDateTime columns then pass through untouched.
    options = " ".join(filter(None, [parsed.query.get("options"), "-c timezone=UTC"]))  # type: ignore[list-item]
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args={"options": options})


class StoreNotMigrated(RuntimeError):
    """The store is not at the schema revision this code expects (unmigrated, behind or ahead of it)."""


@dataclass(frozen=True)
class Revisions:
    """The store's schema revision (None: never migrated) and the one this code expects (the newest migration)."""

    current: str | None
    expected: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.expected


#: Alembic runs a migration through process-wide proxies (``alembic.op``, ``alembic.context``): two upgrades at
#: once in one process would run each other's steps on the wrong connection. One at a time, whatever the store.
_UPGRADING = threading.Lock()


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def expected_revision() -> str:
    """The newest migration shipped with this code (Alembic's single head)."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the migrations directory ships with the package
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return head


def revisions(engine: Engine) -> Revisions:
    """Where the store's schema is (read from Alembic's version table, written nowhere)."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return Revisions(current, expected_revision())


def migrate(engine: Engine, to: str = "head") -> Revisions:
    """Upgrade the database behind ``engine`` to the newest migration (idempotent), or only up to the revision
    ``to``; returns the revisions before the upgrade (``current``) and this code's (``expected``)."""
    before = revisions(engine)
    if before.up_to_date:
        return before
    if before.current is not None and before.current not in _known():
        raise StoreNotMigrated(_newer(engine, before))
    config = _config()
    with _UPGRADING, engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, to)
    return before


def require_current(engine: Engine) -> Revisions:
    """The store's revisions when it is at the one this code expects; otherwise :class:`StoreNotMigrated`
    saying where it is, what is expected and what to run."""
    found = revisions(engine)
    if found.up_to_date:
        return found
    where = engine.url.render_as_string(hide_password=True)
    if found.current is None:
        state = "has no schema yet (never migrated)"
    elif found.current in _known():
        state = f"is at schema revision {found.current}"
    else:
        raise StoreNotMigrated(_newer(engine, found))
    raise StoreNotMigrated(f"the store {where} {state}; this version of hrx expects revision {found.expected}: "
                           "run `hrx migrate` (same HRX_DATABASE_URL) once before starting the API and the engines")


def _newer(engine: Engine, found: Revisions) -> str:
    return (f"the store {engine.url.render_as_string(hide_password=True)} is at schema revision {found.current}, "
            f"which this version of hrx does not know (it expects {found.expected}): it was migrated by a newer "
            "hrx; run that version, not this one")


def _known() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}

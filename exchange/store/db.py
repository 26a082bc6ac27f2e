"""Connecting to the store and bringing its schema up to date with Alembic migrations."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
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


def migrate(engine: Engine) -> None:
    """Upgrade the database behind ``engine`` to the newest migration (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

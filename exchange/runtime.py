"""Assembling a running exchange from Settings: code book, store, pseudonymizer, publisher."""
from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from sqlalchemy import Engine as Database

from exchange.config import Settings
from adapters.private_files import warn_if_readable_by_others
from adapters.pseudonymize import (
    DEFAULT_ALGORITHM,
    AlgorithmUnavailable,
    Pseudonymizer,
    PseudonymKeyMissing,
    create_key_file,
    key_file_path,
    resolve_provider,
)
from exchange.store import StoreNotMigrated, connect, migrate, require_current

if TYPE_CHECKING:
    from codes import CodeBook

log = logging.getLogger(__name__)


def codebook(settings: Settings) -> CodeBook:
    from codes import load_codebook  # only the API and adapters need the code book, not the engine

    book = load_codebook(settings.codes_dir)
    log.info("codes: %d items, %d institutions, %d catalogue versions (data %s)", len(book.items),
             len(book.institutions), len(book.catalogues), book.version)
    return book


def database(settings: Settings) -> Database:
    """The configured store; SystemExit saying what to run when its schema is not at this code's revision.

    Nothing here migrates: that is ``hrx migrate``'s step (:func:`migrated_database`), run once per deployment
    before the processes start, so that several of them starting together never race on a migration.
    """
    db = connect(settings.effective_database_url)
    try:
        found = require_current(db)
    except StoreNotMigrated as exc:
        db.dispose()
        raise SystemExit(f"refusing to start: {exc}") from None
    log.info("store: %s (%s), schema at revision %s", db.url.render_as_string(hide_password=True),
             db.dialect.name, found.current)
    return db


def migrated_database(settings: Settings) -> Database:
    """The configured store brought to the newest schema revision (``hrx migrate``; ``hrx up`` for its own
    stack, once, before it starts its parts)."""
    db = connect(settings.effective_database_url)
    try:
        before = migrate(db)
    except StoreNotMigrated as exc:
        db.dispose()
        raise SystemExit(str(exc)) from None
    where = db.url.render_as_string(hide_password=True)
    if before.up_to_date:
        log.info("store: %s (%s) already at schema revision %s", where, db.dialect.name, before.expected)
    else:
        log.info("store: %s (%s) migrated from schema revision %s to %s", where, db.dialect.name,
                 before.current or "none (empty)", before.expected)
    return db


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    """The configured pseudonym key and algorithm; SystemExit with what to set when the key is missing.

    No process creates a key here: a second key would make pseudonyms no lookup by resident ID finds (only
    ``hrx keys init`` and the first ``hrx up``, :func:`pseudonymizer_creating_default`, create one).
    """
    try:
        found = Pseudonymizer.from_settings(settings.pseudonym_key, settings.pseudonym_key_file,
                                            settings.var_dir, **_algorithm(settings))
    except PseudonymKeyMissing as exc:
        running = settings.stack
        if running is not None and running.pseudonym_key_file is None:
            raise SystemExit(f"no pseudonym key: hrx up (pid {running.pid}) uses an inline key "
                             f"(HRX_PSEUDONYM_KEY, key id {running.key_id}); set the same HRX_PSEUDONYM_KEY") from None
        raise SystemExit(str(exc)) from None
    except (AlgorithmUnavailable, ValueError) as exc:
        raise SystemExit(f"pseudonym key: {exc}") from None
    if not settings.pseudonym_key:
        warn_if_readable_by_others(key_file_path(settings.pseudonym_key_file, settings.var_dir), "pseudonym key")
    _log_key(found, settings)
    return found


def pseudonymizer_creating_default(settings: Settings) -> Pseudonymizer:
    """``hrx up``'s key: as :func:`pseudonymizer`, except that the embedded default ``var/pseudonym.key`` is
    created on the first run (logged with its file and key id).

    Not when the embedded SQLite store already exists: its results were made under a key that is gone, and a
    new one would silently split every patient in two.
    """
    if settings.pseudonym_key or settings.pseudonym_key_file:
        return pseudonymizer(settings)
    path = key_file_path(None, settings.var_dir)
    store = settings.var_dir / "hrx.db"
    if not path.exists():
        if settings.database_url is None and store.exists():
            raise SystemExit(f"no pseudonym key: {path} is missing but the store {store} holds results made "
                             "under a key: restore the key file (or set HRX_PSEUDONYM_KEY_FILE); only to start "
                             "over with a new key, run `hrx keys init`")
        try:
            resolve_provider(settings.pseudonym_algorithm or DEFAULT_ALGORITHM)  # refuse before creating
            created = Pseudonymizer(create_key_file(path), **_algorithm(settings))
        except FileExistsError:  # created meanwhile by `hrx keys init`: use it
            pass
        except AlgorithmUnavailable as exc:
            raise SystemExit(f"pseudonym key: {exc}") from None
        else:
            log.info("pseudonym key: created %s (key id %s, mode 0600) — keep it and back it up: every adapter "
                     "and API of this exchange must use it", path.resolve(), created.key_id)
    return pseudonymizer(settings)


def _algorithm(settings: Settings) -> dict[str, str]:
    return {"algorithm": settings.pseudonym_algorithm} if settings.pseudonym_algorithm else {}


def _log_key(found: Pseudonymizer, settings: Settings) -> None:
    source = ("HRX_PSEUDONYM_KEY" if settings.pseudonym_key
              else key_file_path(settings.pseudonym_key_file, settings.var_dir))
    log.info("pseudonym key: %s from %s (HMAC-%s by %s)", found.key_id, source, found.algorithm.upper(),
             found.provider)
    running = settings.stack
    if running is not None and running.key_id != found.key_id:
        log.warning("pseudonym key %s differs from the key %s of hrx up (pid %d): the engine dead-letters what "
                    "this process publishes unless it accepts %s", found.key_id, running.key_id, running.pid,
                    found.key_id)


def stop_with_parent(stop: threading.Event) -> None:
    """Set ``stop`` once the process that started this one (``HRX_PARENT_PID``, set by ``hrx up``) is gone,
    so that a child never outlives an ``hrx up`` that was killed without a chance to stop it."""
    parent = int(os.environ.get("HRX_PARENT_PID", "0"))
    if not parent:
        return

    def _watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()
    threading.Thread(target=_watch, name="parent-watch", daemon=True).start()


def require_bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise SystemExit("HRX_KAFKA_BOOTSTRAP is not set: point it at a Kafka broker (hrx up starts one itself)")
    return settings.kafka_bootstrap

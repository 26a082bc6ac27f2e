"""Assembling a running exchange from Settings: code book, store, pseudonymizer, publisher."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import Engine as Database

from exchange.config import Settings
from adapters.pseudonymize import Pseudonymizer
from exchange.store import connect, migrate

if TYPE_CHECKING:
    from codes import CodeBook

log = logging.getLogger(__name__)


def codebook(settings: Settings) -> CodeBook:
    from codes import load_codebook  # only the API and adapters need the code book, not the engine

    book = load_codebook(settings.codes_dir)
    log.info("codes: %d items, %d institutions, %d catalogue versions (data %s)", len(book.items),
             len(book.institutions), len(book.catalogues), book.version)
    return book


def database(settings: Settings, upgrade: bool = True) -> Database:
    db = connect(settings.effective_database_url)
    if upgrade:
        migrate(db)
    log.info("store: %s (%s), schema at the newest migration", db.url.render_as_string(hide_password=True),
             db.dialect.name)
    return db


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    return Pseudonymizer.from_settings(settings.pseudonym_key, settings.pseudonym_key_file, settings.var_dir)


def require_bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise SystemExit("HRX_KAFKA_BOOTSTRAP is not set: point it at a Kafka broker (hrx up starts one itself)")
    return settings.kafka_bootstrap

"""Reading the dead letters the engine kept in the store (``dead_letters``), with why each one failed.

The engine records every consumed event it could not store once per (topic, partition, offset) before it
commits the offset (exchange.engine.ResultEngine.store), so the table is the durable place; the copy on
``hr.deadletter.v1`` is for consumers of the broker. The reason is read from the error the engine wrote.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, get_args

import orjson
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from exchange.engine import CONFLICT, STORE_REFUSED
from exchange.store.models import DeadLetter
from schemas.topics import SCHEMA_OF_TOPIC

Reason = Literal["invalid_event", "unknown_key", "store_refused", "conflict", "other"]
REASONS: tuple[str, ...] = get_args(Reason)
_CHUNK = 500


def reason_of(error: str) -> str:
    """``invalid_event`` (not JSON or not its schema), ``unknown_key`` (pseudonyms under a key this exchange does
    not use), ``store_refused`` (the database refused a value), ``conflict`` (another content under a stored
    version's key), else ``other``."""
    if any(error.startswith(f"{schema}: ") for schema in SCHEMA_OF_TOPIC.values()):
        return "invalid_event"
    if error.startswith("unknown pseudonym key id"):
        return "unknown_key"
    if error.startswith(STORE_REFUSED):
        return "store_refused"
    if CONFLICT in error:
        return "conflict"
    return "other"


def issuer_of(payload: str | None) -> str | None:
    """The issuer a payload names, when it parses as an event with one."""
    if not payload:
        return None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    issuer = event.get("issuer") if isinstance(event, dict) else None
    return issuer if isinstance(issuer, str) else None


def page(conn: Connection, *, topic: str | None = None, reason: str | None = None, start: datetime | None = None,
         end: datetime | None = None, before: int | None = None, limit: int = 100,
         keep: Callable[[str | None], bool] | None = None) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` letters, newest first, and the id to pass as ``before`` for the next page (None: no
    more). ``keep`` judges a letter by the issuer its payload names (an operator's scope)."""
    query = select(DeadLetter).order_by(DeadLetter.id.desc())
    if topic is not None:
        query = query.where(DeadLetter.topic == topic)
    if start is not None:
        query = query.where(DeadLetter.failed_at >= start)
    if end is not None:
        query = query.where(DeadLetter.failed_at < end)
    found: list[dict[str, Any]] = []
    cursor = before
    while len(found) <= limit:
        window = query.where(DeadLetter.id < cursor) if cursor is not None else query
        chunk = Session(conn).scalars(window.limit(_CHUNK)).all()
        for letter in chunk:
            why = reason_of(letter.error)
            institution = issuer_of(letter.payload)
            if (reason is None or why == reason) and (keep is None or keep(institution)):
                found.append({"id": letter.id, "failed_at": letter.failed_at, "topic": letter.topic,
                              "partition": letter.partition, "offset": letter.offset, "reason": why,
                              "error": letter.error, "institution": institution, "payload": letter.payload})
        if len(chunk) < _CHUNK:
            break
        cursor = chunk[-1].id
    if len(found) > limit:
        return found[:limit], found[limit - 1]["id"]
    return found, None

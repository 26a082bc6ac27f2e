"""Dead-letter records: what could not be used, why, and where it came from — never a raw resident ID."""
from __future__ import annotations

from typing import Any

from schemas import events
from schemas.resident_id import scrub

MAX_PAYLOAD = 1 << 20


def storable_text(text: bytes | str) -> str:
    """``text`` as text every store and JSON encoder accepts, with nothing lost silently (docs/rules.md,
    "Delivery"): bytes that are not UTF-8 become ``\\xNN`` escapes, a lone surrogate ``\\udNNN``, and NUL (which a
    PostgreSQL text column cannot hold) the four characters ``\\x00``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    else:
        text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def dead_letter_event(error: str, payload: bytes | str | None, *, topic: str | None = None,
                      partition: int | None = None, offset: int | None = None, file: str | None = None,
                      line: int | None = None, adapter: str | None = None,
                      institution: str | None = None) -> dict[str, Any]:
    """A ``hr.dead-letter.v1`` event; payload and error text are scrubbed of resident-ID-shaped numbers and made
    storable (:func:`storable_text`)."""
    kind = "topic" if topic else ("file" if file else "message")
    event = {
        "schema": "hr.dead-letter.v1",
        "event_id": events.new_event_id(),
        "error": scrub(storable_text(error))[:4000],
        "origin": {"kind": kind, "topic": topic, "partition": partition, "offset": offset, "file": file,
                   "line": line, "adapter": adapter, "institution": institution},
        "payload": scrub(storable_text(payload))[:MAX_PAYLOAD] if payload is not None else None,
        "failed_at": events.timestamp(),
    }
    events.validate("dead-letter.v1", event)
    return event

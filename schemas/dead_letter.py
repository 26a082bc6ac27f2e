"""Dead-letter records: what could not be used, why, and where it came from — never a raw resident ID."""
from __future__ import annotations

from typing import Any

from schemas import events
from schemas.resident_id import scrub

MAX_PAYLOAD = 1 << 20


def dead_letter_event(error: str, payload: bytes | str | None, *, topic: str | None = None,
                      partition: int | None = None, offset: int | None = None, file: str | None = None,
                      line: int | None = None, adapter: str | None = None,
                      institution: str | None = None) -> dict[str, Any]:
    """A ``hr.dead-letter.v1`` event; payload and error text are scrubbed of resident-ID-shaped numbers."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", errors="replace")
    kind = "topic" if topic else ("file" if file else "message")
    event = {
        "schema": "hr.dead-letter.v1",
        "event_id": events.new_event_id(),
        "error": scrub(error)[:4000],
        "origin": {"kind": kind, "topic": topic, "partition": partition, "offset": offset, "file": file,
                   "line": line, "adapter": adapter, "institution": institution},
        "payload": scrub(payload)[:MAX_PAYLOAD] if payload is not None else None,
        "failed_at": events.timestamp(),
    }
    events.validate("dead-letter.v1", event)
    return event

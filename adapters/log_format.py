"""Structured logs: one JSON object per line (``HRX_LOG_FORMAT=json``), each carrying the ids of what it is about.

The ids follow a result from its door to the store, as the event envelope carries them (``schemas/``,
``source.message_id``): the FHIR door's request id (``X-Request-ID``, or one made for the request, also written
as the Bundle's message id when the Bundle has no ``identifier``), HL7 v2 MSH-10 (the control id), DICOM's
Study Instance UID (the study event's message id; a C-STORE's SOP Instance UID as ``instance``), a CSV file's
``file#Lline``; the engine logs the same ``message_id`` with the ``event_id`` it stored or dead-lettered.

A log call names them with ``extra={"message_id": …}``, or a door sets them for everything logged while it
handles one message with :func:`log_ids`. The JSON line is built after the log guard
(:mod:`adapters.log_guard`) rewrote the record, and its id fields are scrubbed as well: no resident ID ever.
"""
from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from codes.calendar import BEIJING
from schemas.resident_id import scrub

#: The record attributes (from ``extra=`` or :func:`log_ids`) written as fields of the JSON line.
ID_FIELDS = ("door", "request_id", "message_id", "instance", "event_id", "topic", "partition", "offset")

_ids: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("hrx_log_ids", default=None)


@contextmanager
def log_ids(**ids: Any) -> Iterator[None]:
    """Attach ``ids`` (see :data:`ID_FIELDS`) to every record logged in this context (thread or task)."""
    token = _ids.set({**(_ids.get() or {}), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _ids.reset(token)


def current_ids() -> dict[str, Any]:
    """The ids :func:`log_ids` set in this context."""
    return dict(_ids.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (RFC 3339, Beijing time), ``level``, ``logger``, ``message``, the
    ids of :data:`ID_FIELDS` that are known, ``process`` and, for an exception, ``exception`` (its traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, BEIJING).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = current_ids()
        for name in ID_FIELDS:
            found = getattr(record, name, None)
            if found is None:
                found = ids.get(name)
            if found is not None:
                line[name] = found if isinstance(found, int) else scrub(str(found))
        line["process"] = record.process
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = scrub(record.exc_text)
        if record.stack_info:
            line["stack"] = scrub(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


#: The environment setting that selects the format: ``json``, or ``text`` (the default).
LOG_FORMAT_ENV = "HRX_LOG_FORMAT"

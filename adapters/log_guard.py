"""The log guard: no resident ID reaches a log line, whichever logger wrote it (docs/rules.md, "Privacy").

A :class:`logging.Filter` on the handlers, so that it sees every record they write — whatever the name of
the logger that made it. Library logger names are no guide: python-hl7 names its loggers after its files'
paths, and a library may start logging under a new name in any release.

Two rules, applied to every record:

- Records from the project's own packages (:data:`PROJECT_PACKAGES`) are logged as formatted, with every
  resident ID in the final message, traceback and stack replaced (:func:`schemas.resident_id.scrub`).
- Records from anyone else are logged as their message template only: the arguments are dropped, because
  libraries pass what they handle as arguments (python-hl7 the field it could not unescape, pynetdicom the
  data sets it dumps). The template, traceback and stack are scrubbed as well.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

from schemas.resident_id import scrub

#: Top-level names of the project's packages (and of the loggers it names itself, ``hrx.*``).
PROJECT_PACKAGES = frozenset({"exchange", "adapters", "codes", "schemas", "hrx"})

#: Appended to a third-party template whose arguments were dropped.
WITHHELD = " (arguments withheld)"

_TRACEBACKS = logging.Formatter()


class PatientDataFilter(logging.Filter):
    """Rewrites each record to what may be logged (see the module docstring); never drops a record.

    Idempotent (a record that passed it passes again unchanged), so a record written by several guarded
    handlers is rewritten once in effect.
    """

    def __init__(self, own_packages: Iterable[str] = PROJECT_PACKAGES) -> None:
        super().__init__()
        self.own_packages = frozenset(own_packages)

    def is_own(self, logger_name: str) -> bool:
        """Whether a logger belongs to the project: its name's first dotted part is one of its packages."""
        return logger_name.partition(".")[0] in self.own_packages

    def filter(self, record: logging.LogRecord) -> bool:
        template = str(record.msg)
        if not record.args:
            message = template
        elif self.is_own(record.name):
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a logging call must not fail because of its arguments
                message = template + " (arguments could not be formatted)"
        else:
            message = template + WITHHELD
        record.msg = scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            # rendered here as a formatter would render it, so that the text the handlers write is scrubbed
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def install_log_guard(logger: logging.Logger | None = None) -> PatientDataFilter:
    """Put a :class:`PatientDataFilter` on every handler of ``logger`` (default: the root logger) that has none.

    Call it after the handlers are configured; records of loggers that propagate to ``logger`` pass it.
    Returns the filter installed.
    """
    target = logger if logger is not None else logging.getLogger()
    installed = [f for h in target.handlers for f in h.filters if isinstance(f, PatientDataFilter)]
    guard = installed[0] if installed else PatientDataFilter()
    for handler in target.handlers:
        if not any(isinstance(f, PatientDataFilter) for f in handler.filters):
            handler.addFilter(guard)
    return guard

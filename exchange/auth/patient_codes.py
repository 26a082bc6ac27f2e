"""Patients log in with their resident ID and a one-time code delivered through a pluggable sender.

Rules (docs/rules.md, "Who may see what"): a code has ``CODE_DIGITS`` digits, is valid for ``CODE_LIFETIME``
and for ``MAX_TRIES`` wrong tries; a new request replaces the previous code and is refused within
``RESEND_AFTER`` of the last one. The code is kept only as a salted SHA-256. The exchange never learns a phone
number: the sender is what knows how to reach a resident (an SMS gateway in a deployment); the
:class:`FileSender` of the demo and the tests appends the code to a file.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from exchange.store.access import PatientCode

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(minutes=5)
MAX_TRIES = 5
RESEND_AFTER = timedelta(seconds=30)


class CodeSender(Protocol):
    def send(self, resident_id: str, pseudonym: str, code: str) -> None: ...


class FileSender:
    """Appends one JSON line per code to ``path`` (mode 0600): for the demo and the tests, never production."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, resident_id: str, pseudonym: str, code: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        line = {"to": resident_id[:6] + "*" * 8 + resident_id[-4:], "pseudonym": pseudonym, "code": code,
                "at": datetime.now(UTC).isoformat()}
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")


class CodeRefused(Exception):
    pass


def _digest(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def send_code(database: Engine, sender: CodeSender, resident_id: str, pseudonym: str) -> None:
    now = datetime.now(UTC)
    code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
    salt = secrets.token_hex(16)
    with Session(database) as session, session.begin():
        previous = session.get(PatientCode, pseudonym)
        if previous is not None and previous.sent_at + RESEND_AFTER > now:
            raise CodeRefused("a code was sent moments ago: wait before asking for another")
        if previous is not None:
            session.delete(previous)
            session.flush()
        session.add(PatientCode(patient=pseudonym, code_digest=_digest(salt, code), salt=salt, sent_at=now,
                                expires_at=now + CODE_LIFETIME, failed_tries=0))
    sender.send(resident_id, pseudonym, code)


def redeem_code(database: Engine, pseudonym: str, code: str) -> None:
    """Accept the code once (it is spent), or raise CodeRefused."""
    now = datetime.now(UTC)
    with Session(database) as session, session.begin():
        row = session.get(PatientCode, pseudonym, with_for_update=True)
        if row is None or row.expires_at <= now or row.failed_tries >= MAX_TRIES:
            raise CodeRefused("no valid code: ask for a new one")
        if not hmac.compare_digest(row.code_digest, _digest(row.salt, code)):
            row.failed_tries += 1
            ok = False
        else:
            session.execute(delete(PatientCode).where(PatientCode.patient == pseudonym))
            ok = True
    if not ok:
        raise CodeRefused("wrong code")

"""The audit trail: every read of patient data leaves a record (每次调阅留痕), written in the same
transaction as the read, so a read that is not recorded did not happen (PIPL §55–56: keep ≥ 3 years)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from codes.calendar import beijing_iso
from exchange.store.models import AuditRecord


@dataclass(frozen=True)
class Actor:
    """Who reads, for which institution and why. Until login lands (a later issue) the caller states it."""

    user: str
    institution: str | None
    purpose: str


_FIELDS = ("at", "actor", "institution", "purpose", "patient", "action", "detail")
_INSERT = f"INSERT INTO {AuditRecord.__tablename__} ({', '.join(_FIELDS)}) VALUES ({', '.join(['%s'] * len(_FIELDS))})"


def record(conn: Connection, actor: Actor, action: str, patient: str | None, detail: dict[str, Any]) -> None:
    """Add the record to ``conn``'s transaction (it commits or rolls back with the read it records).

    On PostgreSQL the row goes to the driver as it is, so that it can travel in a pipeline with the request's
    other writes (:func:`exchange.store.pipelined`); SQLAlchemy's insert would wait for its RETURNING.
    """
    values = (datetime.now(UTC), actor.user, actor.institution, actor.purpose, patient, action,
              orjson.dumps(detail).decode())
    if conn.dialect.name == "postgresql":
        conn.connection.driver_connection.execute(_INSERT, values)  # type: ignore[union-attr]
        return
    conn.execute(insert(AuditRecord).values(dict(zip(_FIELDS, values))))


def trail(conn: Connection, patient: str, limit: int = 500) -> list[dict[str, Any]]:
    rows = Session(conn).scalars(select(AuditRecord).where(AuditRecord.patient == patient)
                        .order_by(AuditRecord.at.desc(), AuditRecord.id.desc()).limit(limit))
    return [{"at": beijing_iso(r.at), "actor": r.actor, "institution": r.institution, "purpose": r.purpose,
             "action": r.action, "detail": orjson.loads(r.detail)} for r in rows]

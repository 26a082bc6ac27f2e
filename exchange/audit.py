"""The audit trail: every read of patient data leaves a record (每次调阅留痕), written in the same
transaction as the read, so a read that is not recorded did not happen (PIPL §55–56: keep ≥ 3 years).
Records are only ever appended, each chained to the one before (exchange.audit_chain; docs/rules.md, "Privacy")."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, or_, select
from sqlalchemy.orm import Session

from codes.calendar import beijing_iso
from exchange.audit_chain import sealed
from exchange.store.models import AuditRecord
from exchange.store.write import insert


@dataclass(frozen=True)
class Actor:
    """Who reads, for which institution and why: the authenticated principal (exchange.auth.principal).

    ``role`` and ``department`` are the reader's as login establishes them; ``on_behalf_of`` names the clinician
    a system (a HIS client) acts for, so that both are recorded; ``break_glass``: an emergency read outside the
    reader's normal rights, to be reviewed afterwards.
    """

    user: str
    institution: str | None
    purpose: str
    role: str | None = None
    department: str | None = None
    on_behalf_of: str | None = None
    break_glass: bool = False


def record(conn: Connection, actor: Actor, action: str, patient: str | None, detail: dict[str, Any]) -> None:
    """Add the record to ``conn``'s transaction (it commits or rolls back with the read it records).

    Written through the store's write path, so that inside :func:`exchange.store.pipelined` it travels with the
    request's other writes without waiting for its reply (on PostgreSQL the database links it to the chain).
    """
    insert(conn, AuditRecord.__table__, [sealed(conn, {
        "at": datetime.now(UTC), "actor": actor.user, "institution": actor.institution, "purpose": actor.purpose,
        "role": actor.role, "department": actor.department, "on_behalf_of": actor.on_behalf_of,
        "break_glass": actor.break_glass, "patient": patient, "action": action,
        "detail": orjson.dumps(detail).decode()})])


def trail(conn: Connection, patient: str | None = None, limit: int = 500, *, principal: str | None = None,
          institution: str | None = None, break_glass_only: bool = False, start: datetime | None = None,
          end: datetime | None = None, institutions: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Records, break-glass reads first, then newest first: of a patient, of a principal (as the reader or as
    the clinician a system read for) and/or of an institution; made at ``start`` or later and before ``end``
    (zoned instants), by one of ``institutions`` when given (a scoped auditor's). Every condition is applied in
    the query, so ``limit`` counts records that meet them all."""
    query = select(AuditRecord)
    if institutions is not None:
        query = query.where(AuditRecord.institution.in_(sorted(institutions)))
    if start is not None:
        query = query.where(AuditRecord.at >= start)
    if end is not None:
        query = query.where(AuditRecord.at < end)
    if patient is not None:
        query = query.where(AuditRecord.patient == patient)
    if principal is not None:
        query = query.where(or_(AuditRecord.actor == principal, AuditRecord.on_behalf_of == principal))
    if institution is not None:
        query = query.where(AuditRecord.institution == institution)
    if break_glass_only:
        query = query.where(AuditRecord.break_glass.is_(True))
    rows = Session(conn).scalars(query.order_by(AuditRecord.break_glass.desc(), AuditRecord.at.desc(),
                                                AuditRecord.id.desc()).limit(limit))
    return [{"at": beijing_iso(r.at), "patient": r.patient, "actor": r.actor, "institution": r.institution,
             "purpose": r.purpose, "role": r.role, "department": r.department, "on_behalf_of": r.on_behalf_of,
             "break_glass": r.break_glass, "action": r.action, "detail": orjson.loads(r.detail)} for r in rows]

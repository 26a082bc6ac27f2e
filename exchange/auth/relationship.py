"""The treatment relationship, break-glass and the patient's sharing blocks.

Rules (docs/rules.md, "Who may see what"):

- A clinician, or a HIS acting for one, reads a patient's results only while the patient has an open encounter
  at the clinician's institution: registered by the HIS (``POST /api/v1/encounters``), or named by the HIS on
  an order-time check (the encounter is then registered, open for ``NAMED_ENCOUNTER_HOURS``).
- Break-glass: with a written reason, a clinician opens a window of ``BREAK_GLASS_WINDOW`` on one patient; every
  read in it is flagged in the audit, listed first for the auditor and shown to the patient.
- A patient may block the sharing of their results from one hospital, or of one item category, with other
  hospitals: blocked results are left out of checks and timelines elsewhere — except in a break-glass window,
  where they are shown and the read is flagged. The issuing hospital itself always sees its own results.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, bindparam, exists, insert, or_, select, update

from exchange.store.access import BreakGlass, Encounter, SharingBlock

BREAK_GLASS_WINDOW = timedelta(hours=4)
NAMED_ENCOUNTER_HOURS = 24
MIN_REASON_LENGTH = 10


class RelationshipError(ValueError):
    """A request the relationship rules refuse: ``field`` at fault, ``status`` 409 (contradicts what is
    registered) or 422."""

    def __init__(self, message: str, field: str, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.status = field, status


@dataclass(frozen=True)
class Access:
    """Why a read of a patient's results is allowed: an open encounter, or a break-glass window."""

    encounter: str | None
    break_glass: bool
    blocks: bool = True  # whether the patient has sharing blocks to apply (True: look them up)


def _registered(conn: Connection, institution: str, encounter_key: str, patient: str) -> bool:
    """Whether the encounter is registered already; 409 when it is, for another patient."""
    found = conn.execute(select(Encounter.patient).where(Encounter.institution == institution,
                                                          Encounter.encounter_key == encounter_key)).first()
    if found is not None and found.patient != patient:
        raise RelationshipError(f"encounter {encounter_key!r} is registered for another patient", "encounter_id", 409)
    return found is not None


def register_encounter(conn: Connection, *, institution: str, encounter_key: str, patient: str,
                       department: str | None, starts_at: datetime, ends_at: datetime | None,
                       registered_by: str) -> bool:
    """Register (or update: a discharge sets ``ends_at``) an encounter; True when it was new.

    The patient of an encounter never changes: another patient under the same key is refused.
    """
    if ends_at is not None and ends_at < starts_at:
        raise RelationshipError("the encounter ends before it starts", "end")
    if _registered(conn, institution, encounter_key, patient):
        conn.execute(update(Encounter).where(Encounter.institution == institution,
                                             Encounter.encounter_key == encounter_key)
                     .values(department=department, starts_at=starts_at, ends_at=ends_at))
        return False
    conn.execute(insert(Encounter).values(institution=institution, encounter_key=encounter_key, patient=patient,
                                          department=department, starts_at=starts_at, ends_at=ends_at,
                                          registered_by=registered_by, registered_at=datetime.now(UTC)))
    return True


def register_named(conn: Connection, *, institution: str, encounter_key: str, patient: str,
                   registered_by: str) -> None:
    """An encounter a HIS names on an order-time check: registered open for ``NAMED_ENCOUNTER_HOURS`` unless
    the HIS registered it already (then its own dates stand)."""
    if _registered(conn, institution, encounter_key, patient):
        return
    now = datetime.now(UTC)
    register_encounter(conn, institution=institution, encounter_key=encounter_key, patient=patient,
                       department=None, starts_at=now, ends_at=now + timedelta(hours=NAMED_ENCOUNTER_HOURS),
                       registered_by=registered_by)


def open_break_glass(conn: Connection, principal_id: str, institution: str, patient: str, reason: str
                     ) -> datetime:
    """Open an emergency window; returns when it closes."""
    reason = reason.strip()
    if len(reason) < MIN_REASON_LENGTH:
        raise RelationshipError(f"break-glass needs a written reason of at least {MIN_REASON_LENGTH} characters",
                                "reason")
    now = datetime.now(UTC)
    conn.execute(insert(BreakGlass).values(principal_id=principal_id, institution=institution, patient=patient,
                                           reason=reason, opened_at=now, expires_at=now + BREAK_GLASS_WINDOW))
    return now + BREAK_GLASS_WINDOW


def _standing() -> Any:
    """Built once (constructing it cost more than running it): the break-glass window, the open encounter and
    whether the patient has sharing blocks, in one query."""
    now = bindparam("now", type_=BreakGlass.opened_at.type)
    patient = bindparam("patient")
    glass = exists().where(BreakGlass.principal_id == bindparam("principal"), BreakGlass.patient == patient,
                           BreakGlass.opened_at <= now, BreakGlass.expires_at > now)
    encounter = select(Encounter.encounter_key).where(
        Encounter.patient == patient, Encounter.institution == bindparam("institution"), Encounter.starts_at <= now,
        or_(Encounter.ends_at.is_(None), Encounter.ends_at >= now)).limit(1).scalar_subquery()
    blocked = exists().where(SharingBlock.patient == patient, SharingBlock.removed_at.is_(None))
    return select(glass, encounter, blocked)


_STANDING = _standing()


def treatment_access(conn: Connection, *, principal_id: str, institution: str, patient: str) -> Access | None:
    """Why this clinician (or the HIS acting for one) may read this patient's results now, or None.

    An open break-glass window comes first, even beside an encounter: every read in it is flagged, and the
    patient's sharing blocks do not hold results back from it. One query (the window, the encounter and
    whether the patient has blocks): every check and timeline asks it.
    """
    in_glass, key, has_blocks = conn.execute(_STANDING, {"principal": principal_id, "patient": patient,
                                                         "institution": institution,
                                                         "now": datetime.now(UTC)}).one()
    if not in_glass and key is None:
        return None
    return Access(key, bool(in_glass), bool(has_blocks))


# --- sharing blocks --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    id: int
    issuer: str | None
    category: str | None
    created_at: datetime


def blocks(conn: Connection, patient: str) -> list[Block]:
    rows = conn.execute(select(SharingBlock).where(SharingBlock.patient == patient,
                                                   SharingBlock.removed_at.is_(None)).order_by(SharingBlock.id))
    return [Block(r.id, r.issuer, r.category, r.created_at) for r in rows]


def add_block(conn: Connection, patient: str, issuer: str | None, category: str | None) -> Block:
    if issuer is None and category is None:
        raise RelationshipError("a block names a hospital (issuer), a category, or both", "issuer")
    now = datetime.now(UTC)
    new_id = conn.execute(insert(SharingBlock).values(patient=patient, issuer=issuer, category=category,
                                                      created_at=now).returning(SharingBlock.id)).scalar_one()
    return Block(new_id, issuer, category, now)


def remove_block(conn: Connection, patient: str, block_id: int) -> bool:
    done = conn.execute(update(SharingBlock).where(SharingBlock.id == block_id, SharingBlock.patient == patient,
                                                   SharingBlock.removed_at.is_(None))
                        .values(removed_at=datetime.now(UTC)))
    return done.rowcount == 1


def is_blocked(found: list[Block], *, issuer: str, categories: set[str], reader_institution: str | None) -> bool:
    """Whether a result of ``issuer`` with items of ``categories`` is withheld from ``reader_institution``."""
    if reader_institution == issuer:
        return False
    return any((b.issuer is None or b.issuer == issuer) and (b.category is None or b.category in categories)
               for b in found)

"""SQLAlchemy 2.0 typed models of the store.

Natural keys are UNIQUE constraints, so every write can be idempotent with ``ON CONFLICT`` instead of
search-then-insert (which races between engine consumers). Every version of a result is kept; the
``result_heads`` row points at the highest version, which is what clinicians see.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        TypeDecorator, UniqueConstraint, false)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: BIGINT on PostgreSQL; SQLite only auto-increments an ``INTEGER PRIMARY KEY``.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on both SQLite (which keeps no zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; times must carry a zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        # PostgreSQL sessions run with TimeZone=UTC (see exchange.store.db.connect), so psycopg already returns
        # aware UTC datetimes: no per-value Python call (a check reads thousands of them).
        if dialect.name == "postgresql":
            return None
        return super().result_processor(dialect, coltype)


class Base(DeclarativeBase):
    pass


class Result(Base):
    """One version of one report (lab) or study report (imaging) as published by its issuer."""

    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("issuer", "result_id", "version", name="uq_results_natural_key"),
        Index("ix_results_patient", "patient"),
        Index("ix_results_issuer_mapping", "issuer", "mapping_version"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    issuer: Mapped[str] = mapped_column(String(64))
    result_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # lab | imaging
    status: Mapped[str] = mapped_column(String(24))
    patient: Mapped[str] = mapped_column(String(64))
    unified_code: Mapped[str | None] = mapped_column(String(16))
    local_code: Mapped[str] = mapped_column(String(64))
    # The issuer's mapping table version the codes were mapped under; a newer table triggers re-evaluation.
    mapping_version: Mapped[str | None] = mapped_column(String(64))
    collected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime())
    event: Mapped[str] = mapped_column(Text)  # the validated event as JSON, for audit and re-evaluation
    source_topic: Mapped[str | None] = mapped_column(String(128))
    source_partition: Mapped[int | None] = mapped_column(Integer)
    source_offset: Mapped[int | None] = mapped_column(BigInteger)


class ResultHead(Base):
    """The current (highest) version of each result; a stale resend never moves it backwards."""

    __tablename__ = "result_heads"
    __table_args__ = (Index("ix_result_heads_patient", "patient", "reported_at"),)

    issuer: Mapped[str] = mapped_column(String(64), primary_key=True)
    result_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    result_pk: Mapped[int] = mapped_column(BigId, ForeignKey("results.id"))
    patient: Mapped[str] = mapped_column(String(64))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Observation(Base):
    """One analyte value of a lab report version (or the single coded finding of an imaging report)."""

    __tablename__ = "observations"
    __table_args__ = (Index("ix_observations_unified_code", "unified_code"),)

    result_pk: Mapped[int] = mapped_column(BigId, ForeignKey("results.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    unified_code: Mapped[str | None] = mapped_column(String(16))
    local_code: Mapped[str] = mapped_column(String(64))
    local_system: Mapped[str | None] = mapped_column(String(256))
    value: Mapped[float | None] = mapped_column(Float)
    value_text: Mapped[str | None] = mapped_column(Text)
    unit: Mapped[str | None] = mapped_column(String(64))
    ref_low: Mapped[float | None] = mapped_column(Float)
    ref_high: Mapped[float | None] = mapped_column(Float)
    ref_text: Mapped[str | None] = mapped_column(String(256))
    interpretation: Mapped[str | None] = mapped_column(String(16))


class DeadLetter(Base):
    """An event the engine could not use, kept with its origin; once per (topic, partition, offset)."""

    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("topic", "partition", "offset", name="uq_dead_letters_origin"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(128))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    error: Mapped[str] = mapped_column(Text)
    payload: Mapped[str | None] = mapped_column(Text)  # scrubbed of resident-ID-shaped text
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Presentation(Base):
    """A recognizable prior result shown to a requesting institution (the recognition rate's denominator).

    Counted once per encounter (or per check when no encounter is given), result and item.
    """

    __tablename__ = "presentations"
    __table_args__ = (
        UniqueConstraint("requesting_institution", "encounter_key", "result_issuer", "result_id", "item_code",
                         name="uq_presentations_once"),
        Index("ix_presentations_requester_time", "requesting_institution", "presented_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    check_id: Mapped[str] = mapped_column(String(36))
    requesting_institution: Mapped[str] = mapped_column(String(64))
    encounter_key: Mapped[str] = mapped_column(String(64))
    patient: Mapped[str] = mapped_column(String(64))
    result_issuer: Mapped[str] = mapped_column(String(64))
    result_id: Mapped[str] = mapped_column(String(128))
    result_version: Mapped[int] = mapped_column(Integer)
    item_code: Mapped[str] = mapped_column(String(16))
    tier: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    presented_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Decision(Base):
    """A clinician's accept / reject (with a coded reason) / revoke on one item of one prior result."""

    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_requester_time", "requesting_institution", "decided_at"),
        Index("ix_decisions_subject", "requesting_institution", "encounter_id", "result_issuer", "result_id",
              "item_code"),
        Index("ix_decisions_unpublished", "published_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    decision_id: Mapped[str] = mapped_column(String(36), unique=True)
    result_issuer: Mapped[str] = mapped_column(String(64))
    result_id: Mapped[str] = mapped_column(String(128))
    result_version: Mapped[int] = mapped_column(Integer)
    item_code: Mapped[str | None] = mapped_column(String(16))
    patient: Mapped[str] = mapped_column(String(64))
    requesting_institution: Mapped[str] = mapped_column(String(64))
    clinician_id: Mapped[str] = mapped_column(String(64))
    encounter_id: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[str | None] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(8))
    reason_code: Mapped[str | None] = mapped_column(String(2))
    note: Mapped[str | None] = mapped_column(String(200))
    revokes: Mapped[str | None] = mapped_column(String(36))  # decision_id undone by a revoke
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # outbox: None until on Kafka


class Feedback(Base):
    """An error report from a receiving hospital to the issuer (report problem / image problem)."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_issuer_status", "result_issuer", "status"),
                      Index("ix_feedback_unpublished", "published_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    feedback_id: Mapped[str] = mapped_column(String(36), unique=True)
    result_issuer: Mapped[str] = mapped_column(String(64))
    result_id: Mapped[str] = mapped_column(String(128))
    result_version: Mapped[int] = mapped_column(Integer)
    patient: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text)
    reporter_institution: Mapped[str] = mapped_column(String(64))
    reporter_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # open | acknowledged | resolved
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditRecord(Base):
    """Every read of patient data (每次调阅留痕): who, in which role, for which institution and purpose, what,
    when. Append-only and hash-chained (exchange.audit_chain): ``seq`` numbers the rows 1, 2, … without gaps,
    ``content_digest`` seals the row's own fields and ``chain_digest`` the row and every row before it."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_patient_time", "patient", "at"), UniqueConstraint("seq", name="uq_audit_seq"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(64))
    institution: Mapped[str | None] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32))
    patient: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)  # JSON: what was read (no resident IDs)
    role: Mapped[str | None] = mapped_column(String(64))
    department: Mapped[str | None] = mapped_column(String(64))
    on_behalf_of: Mapped[str | None] = mapped_column(String(64))  # the clinician a system (HIS) acts for
    break_glass: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # PostgreSQL: seq and chain_digest are set by the table's BEFORE INSERT trigger, whatever the row gives.
    seq: Mapped[int] = mapped_column(BigInteger)
    content_digest: Mapped[str] = mapped_column(String(64))
    chain_digest: Mapped[str] = mapped_column(String(64))


class IssuedCard(Base):
    """A CDS Hooks card the exchange answered a hook with (exchange.cds): which prior result it offered to whom,
    for which draft order, so that the client's feedback on the card (by its ``uuid``) becomes that clinician's
    decision on that result. ``outcome`` is set once, by the first feedback (a replay finds it set)."""

    __tablename__ = "cds_cards"
    __table_args__ = (Index("ix_cds_cards_requester_time", "requesting_institution", "issued_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    card_uuid: Mapped[str] = mapped_column(String(36), unique=True)
    service_id: Mapped[str] = mapped_column(String(64))
    hook: Mapped[str] = mapped_column(String(32))
    hook_instance: Mapped[str] = mapped_column(String(64))
    requesting_institution: Mapped[str] = mapped_column(String(64))
    clinician_id: Mapped[str] = mapped_column(String(64))
    encounter_key: Mapped[str] = mapped_column(String(64))  # the hook's encounterId, else cds:<hookInstance>
    patient: Mapped[str] = mapped_column(String(64))
    result_issuer: Mapped[str] = mapped_column(String(64))
    result_id: Mapped[str] = mapped_column(String(128))
    result_version: Mapped[int] = mapped_column(Integer)
    item_code: Mapped[str] = mapped_column(String(16))
    order_id: Mapped[str | None] = mapped_column(String(64))  # the draft ServiceRequest's id (order hooks)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(16))  # accepted | overridden, once fed back
    override_reason: Mapped[str | None] = mapped_column(String(2))  # the reason code of an override, if given
    decision_id: Mapped[str | None] = mapped_column(String(36))  # the decision the feedback became, if any
    outcome_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

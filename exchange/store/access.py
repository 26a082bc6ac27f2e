"""Tables of access control: accounts, hospital-system clients, tokens, patients' one-time codes, encounters
(the treatment relationship), break-glass windows and patients' sharing blocks (docs/rules.md, "Who may see
what")."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from exchange.store.models import Base, BigId, UTCDateTime


class Account(Base):
    """A person who logs in with a password: clinician, operator, auditor or admin."""

    __tablename__ = "accounts"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    institution: Mapped[str | None] = mapped_column(String(64))
    department: Mapped[str | None] = mapped_column(String(64))
    scope: Mapped[str | None] = mapped_column(String(64))  # operators and auditors
    password_hash: Mapped[str] = mapped_column(Text)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_step: Mapped[int | None] = mapped_column(BigInteger)  # the last TOTP time step accepted: each code once
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Client(Base):
    """A hospital system (HIS, LIS/RIS/PACS adapter, FHIR sender) bound to one institution."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # his | source
    institution: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Token(Base):
    """A bearer token or a web session, kept as the SHA-256 of the random value the holder presents."""

    __tablename__ = "tokens"
    __table_args__ = (Index("ix_tokens_principal", "principal_kind", "principal_id"),)

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_kind: Mapped[str] = mapped_column(String(8))  # account | client | patient
    principal_id: Mapped[str] = mapped_column(String(64))
    session: Mapped[bool] = mapped_column(Boolean, default=False)  # a cookie session (CSRF-checked)
    csrf_digest: Mapped[str | None] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class PatientCode(Base):
    """The one-time login code last sent to a patient (kept as a salted SHA-256), with its failed tries."""

    __tablename__ = "patient_codes"

    patient: Mapped[str] = mapped_column(String(64), primary_key=True)
    code_digest: Mapped[str] = mapped_column(String(64))
    salt: Mapped[str] = mapped_column(String(32))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    failed_tries: Mapped[int] = mapped_column(Integer, default=0)


class Encounter(Base):
    """A patient's visit at an institution, registered by its HIS: while open, the institution's clinicians
    may read the patient's results (the treatment relationship)."""

    __tablename__ = "encounters"
    __table_args__ = (UniqueConstraint("institution", "encounter_key"),
                      Index("ix_encounters_patient", "patient", "institution"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    institution: Mapped[str] = mapped_column(String(64))
    encounter_key: Mapped[str] = mapped_column(String(64))  # the HIS's own encounter id
    patient: Mapped[str] = mapped_column(String(64))
    department: Mapped[str | None] = mapped_column(String(64))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # None: open
    registered_by: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BreakGlass(Base):
    """An emergency access window for one patient, opened by one clinician with a written reason."""

    __tablename__ = "break_glass"
    __table_args__ = (Index("ix_break_glass_principal_patient", "principal_id", "patient"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    principal_id: Mapped[str] = mapped_column(String(64))
    institution: Mapped[str] = mapped_column(String(64))
    patient: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SharingBlock(Base):
    """A patient's block on sharing their results from one hospital, or of one category, with other hospitals."""

    __tablename__ = "sharing_blocks"
    __table_args__ = (Index("ix_sharing_blocks_patient", "patient"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str | None] = mapped_column(String(64))  # None: every hospital
    category: Mapped[str | None] = mapped_column(String(32))  # a code-book item category; None: every one
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

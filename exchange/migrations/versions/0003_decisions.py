"""Presentations, decisions, feedback and the audit trail.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

from exchange.store.models import BigId, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "presentations",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("check_id", sa.String(36), nullable=False),
        sa.Column("requesting_institution", sa.String(64), nullable=False),
        sa.Column("encounter_key", sa.String(64), nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("result_issuer", sa.String(64), nullable=False),
        sa.Column("result_id", sa.String(128), nullable=False),
        sa.Column("result_version", sa.Integer, nullable=False),
        sa.Column("item_code", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("presented_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("requesting_institution", "encounter_key", "result_issuer", "result_id", "item_code",
                            name="uq_presentations_once"),
    )
    op.create_index("ix_presentations_requester_time", "presentations", ["requesting_institution", "presented_at"])
    op.create_table(
        "decisions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("decision_id", sa.String(36), nullable=False, unique=True),
        sa.Column("result_issuer", sa.String(64), nullable=False),
        sa.Column("result_id", sa.String(128), nullable=False),
        sa.Column("result_version", sa.Integer, nullable=False),
        sa.Column("item_code", sa.String(16), nullable=True),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("requesting_institution", sa.String(64), nullable=False),
        sa.Column("clinician_id", sa.String(64), nullable=False),
        sa.Column("encounter_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("reason_code", sa.String(2), nullable=True),
        sa.Column("note", sa.String(200), nullable=True),
        sa.Column("revokes", sa.String(36), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_decisions_requester_time", "decisions", ["requesting_institution", "decided_at"])
    op.create_index("ix_decisions_subject", "decisions",
                    ["requesting_institution", "encounter_id", "result_issuer", "result_id", "item_code"])
    op.create_index("ix_decisions_unpublished", "decisions", ["published_at"])
    op.create_table(
        "feedback",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("feedback_id", sa.String(36), nullable=False, unique=True),
        sa.Column("result_issuer", sa.String(64), nullable=False),
        sa.Column("result_id", sa.String(128), nullable=False),
        sa.Column("result_version", sa.Integer, nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("reporter_institution", sa.String(64), nullable=False),
        sa.Column("reporter_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_feedback_issuer_status", "feedback", ["result_issuer", "status"])
    op.create_index("ix_feedback_unpublished", "feedback", ["published_at"])
    op.create_table(
        "audit",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("institution", sa.String(64), nullable=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_patient_time", "audit", ["patient", "at"])


def downgrade() -> None:
    for table in ("audit", "feedback", "decisions", "presentations"):
        op.drop_table(table)

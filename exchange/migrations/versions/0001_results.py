"""Results, their heads and observations, and dead letters.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from exchange.store.models import BigId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "results",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("result_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("unified_code", sa.String(16), nullable=True),
        sa.Column("local_code", sa.String(64), nullable=False),
        sa.Column("collected_at", UTCDateTime(), nullable=True),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.Column("stored_at", UTCDateTime(), nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("source_topic", sa.String(128), nullable=True),
        sa.Column("source_partition", sa.Integer, nullable=True),
        sa.Column("source_offset", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("issuer", "result_id", "version", name="uq_results_natural_key"),
    )
    op.create_index("ix_results_patient", "results", ["patient"])
    op.create_table(
        "result_heads",
        sa.Column("issuer", sa.String(64), primary_key=True),
        sa.Column("result_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("result_pk", BigId, sa.ForeignKey("results.id"), nullable=False),
        sa.Column("patient", sa.String(64), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_result_heads_patient", "result_heads", ["patient", "reported_at"])
    op.create_table(
        "observations",
        sa.Column("result_pk", BigId, sa.ForeignKey("results.id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("unified_code", sa.String(16), nullable=True),
        sa.Column("local_code", sa.String(64), nullable=False),
        sa.Column("local_system", sa.String(256), nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("value_text", sa.Text, nullable=True),
        sa.Column("unit", sa.String(64), nullable=True),
        sa.Column("ref_low", sa.Float, nullable=True),
        sa.Column("ref_high", sa.Float, nullable=True),
        sa.Column("ref_text", sa.String(256), nullable=True),
        sa.Column("interpretation", sa.String(16), nullable=True),
    )
    op.create_index("ix_observations_unified_code", "observations", ["unified_code"])
    op.create_table(
        "dead_letters",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(128), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=True),
        sa.Column("failed_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("topic", "partition", "offset", name="uq_dead_letters_origin"),
    )


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("observations")
    op.drop_table("result_heads")
    op.drop_table("results")

"""Record the mapping table version each result was mapped under.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("mapping_version", sa.String(64), nullable=True))
    op.create_index("ix_results_issuer_mapping", "results", ["issuer", "mapping_version"])


def downgrade() -> None:
    op.drop_index("ix_results_issuer_mapping", "results")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("mapping_version")

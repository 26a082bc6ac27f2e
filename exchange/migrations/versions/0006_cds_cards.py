"""CDS Hooks: the cards issued, so that feedback on a card maps back to its result, clinician and encounter.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

from exchange.store.models import IssuedCard

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Created as exchange/store/models.py defines the table at this revision: a later change comes with its own
# migration.
TABLES = [IssuedCard.__table__]


def upgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        table.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(TABLES):
        table.drop(bind)

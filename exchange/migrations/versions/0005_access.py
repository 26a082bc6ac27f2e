"""Access control: accounts, clients, tokens, patients' one-time codes, encounters, break-glass, sharing blocks.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

from exchange.store.access import Account, BreakGlass, Client, Encounter, PatientCode, SharingBlock, Token

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# New tables, created as exchange/store/access.py defines them at this revision: a later change to one of
# them comes with its own migration.
TABLES = [model.__table__ for model in (Account, Client, Token, PatientCode, Encounter, BreakGlass, SharingBlock)]


def upgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        table.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(TABLES):
        table.drop(bind)

"""The audit trail: who acted in which role (and for whom), append-only, hash-chained (exchange.audit_chain).

Existing records are chained in id order. PostgreSQL: a BEFORE INSERT trigger links each new record to the
chain; UPDATE, DELETE and TRUNCATE are refused by triggers and revoked from PUBLIC, and the role named by
HRX_API_DB_ROLE, if it exists, may only SELECT and INSERT. SQLite: triggers refuse UPDATE and DELETE, and the
writer links (exchange.audit_chain.sealed).

Revision ID: 0004
Revises: 0003
"""
import logging

import sqlalchemy as sa
from alembic import op

from exchange.audit_chain import CONTENT_FIELDS, GENESIS, chain_digest, content_digest
from exchange.config import Settings
from exchange.store.models import BigId, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)

#: What a change or removal of an audit record is refused with (both backends).
APPEND_ONLY = "audit records are append-only (审计记录只增不改)"
#: The advisory lock key appenders of the chain take in turn (any constant no other lock of the database uses).
CHAIN_LOCK = 0x6872_7861_7564_6974  # "hrxaudit"

_POSTGRESQL = [
    f"""CREATE FUNCTION audit_chain_link() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last_seq bigint;
    last_chain text;
BEGIN
    -- Appenders take turns until they commit: the head read next is the last committed record, and no other
    -- appender reads it before this record is committed or rolled back.
    PERFORM pg_advisory_xact_lock({CHAIN_LOCK});
    SELECT seq, chain_digest INTO last_seq, last_chain FROM audit ORDER BY seq DESC LIMIT 1;
    NEW.seq := coalesce(last_seq, 0) + 1;
    NEW.chain_digest := encode(sha256(convert_to(coalesce(last_chain, '{GENESIS}') || NEW.content_digest,
                                                 'UTF8')), 'hex');
    RETURN NEW;
END $$""",
    "CREATE TRIGGER audit_chain BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION audit_chain_link()",
    f"""CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY}' USING ERRCODE = 'insufficient_privilege';
END $$""",
    "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit FOR EACH ROW "
    "EXECUTE FUNCTION audit_append_only()",
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT "
    "EXECUTE FUNCTION audit_append_only()",
]
_SQLITE = [f"CREATE TRIGGER audit_append_only_{verb.lower()} BEFORE {verb} ON audit "
           f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END" for verb in ("UPDATE", "DELETE")]


def _chain_existing() -> None:
    """Seal and chain the records written before this migration, in id order."""
    audit = sa.table("audit", sa.column("id", BigId), sa.column("at", UTCDateTime()),
                     *(sa.column(name, sa.Boolean() if name == "break_glass" else sa.Text())
                       for name in CONTENT_FIELDS if name != "at"),
                     sa.column("seq", sa.BigInteger()), sa.column("content_digest", sa.Text()),
                     sa.column("chain_digest", sa.Text()))
    bind = op.get_bind()
    head = GENESIS
    sealed = []
    rows = bind.execute(sa.select(audit.c.id, *(audit.c[name] for name in CONTENT_FIELDS)).order_by(audit.c.id))
    for seq, row in enumerate(rows, start=1):
        content = content_digest(row._mapping)
        head = chain_digest(head, content)
        sealed.append({"row_id": row.id, "seq": seq, "content_digest": content, "chain_digest": head})
    if sealed:
        bind.execute(audit.update().where(audit.c.id == sa.bindparam("row_id")), sealed)  # one executemany


def _grant() -> None:
    """PostgreSQL, when this migration runs as the table's owner: nobody but the owner may change or remove
    audit records, and the API's role (HRX_API_DB_ROLE, if it exists) may only read and append them."""
    bind = op.get_bind()
    owner = bind.execute(sa.text("SELECT pg_has_role(relowner, 'USAGE') FROM pg_class "
                                 "WHERE oid = 'audit'::regclass")).scalar_one()
    if not owner:
        log.warning("not the owner of the audit table: its privileges are left as they are")
        return
    op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit FROM PUBLIC")
    role = Settings.from_env(stack=False).api_db_role
    if not role:
        return
    if not bind.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).first():
        log.warning("HRX_API_DB_ROLE %r is no role of this server: no grant on the audit table", role)
        return
    quoted = bind.dialect.identifier_preparer.quote(role)
    op.execute(f"REVOKE ALL ON audit FROM {quoted}")
    op.execute(f"GRANT SELECT, INSERT ON audit TO {quoted}")
    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence('audit', 'id')")).scalar_one()
    op.execute(f"GRANT USAGE ON SEQUENCE {sequence} TO {quoted}")  # the id an insert draws


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        for name in ("role", "department", "on_behalf_of"):
            batch.add_column(sa.Column(name, sa.String(64), nullable=True))
        batch.add_column(sa.Column("break_glass", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("content_digest", sa.String(64), nullable=True))
        batch.add_column(sa.Column("chain_digest", sa.String(64), nullable=True))
    _chain_existing()
    with op.batch_alter_table("audit") as batch:
        for name in ("seq", "content_digest", "chain_digest"):
            batch.alter_column(name, nullable=False)
        batch.create_unique_constraint("uq_audit_seq", ["seq"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRESQL:
            op.execute(statement)
        _grant()
    else:
        for statement in _SQLITE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger in ("audit_chain", "audit_append_only", "audit_no_truncate"):
            op.execute(f"DROP TRIGGER {trigger} ON audit")
        op.execute("DROP FUNCTION audit_chain_link()")
        op.execute("DROP FUNCTION audit_append_only()")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER audit_append_only_{verb}")
    with op.batch_alter_table("audit") as batch:
        batch.drop_constraint("uq_audit_seq", type_="unique")
        for name in ("chain_digest", "content_digest", "seq", "break_glass", "on_behalf_of", "department", "role"):
            batch.drop_column(name)

"""The audit trail's hash chain (docs/rules.md, "Privacy", audit): every record seals its own fields and, through
its predecessor, every record before it, so that a record changed, removed or moved breaks the chain at its place.

- ``content_digest``: SHA-256 (hex) of the record's canonical serialization (:func:`canonical`), computed in
  Python when the record is written.
- ``chain_digest``: SHA-256 (hex) of the previous record's ``chain_digest`` followed by this record's
  ``content_digest`` (as hex text); the first record follows :data:`GENESIS`.
- ``seq``: the record's place in the chain, 1, 2, … without a gap (ids are not: on PostgreSQL an id is drawn
  before the record waits for its turn in the chain).

Who links a record to the chain, one way per backend:

- PostgreSQL: the table's BEFORE INSERT trigger (migration 0004), under a transaction-scoped advisory lock that
  serializes appenders until they commit. The API's pipelined write (exchange.store.write.pipelined) thus needs
  no reply before it goes on; the price is that audited transactions take turns from their audit write to
  their commit.
- SQLite: :func:`sealed`, in the writer's transaction, reads the chain's head and computes both digests.

The chain proves that the records are as they were written only relative to a head digest kept elsewhere:
whoever can write the table (and drop its triggers) can rewrite and re-chain it wholesale, and the records
after the last anchored head can be cut off unnoticed. :func:`verify` reports the head for that purpose.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, select

from exchange.store.models import AuditRecord

#: What the first record's chain digest follows.
GENESIS = "0" * 64

#: The fields a record's content digest seals (AuditRecord's columns but id and the chain's own).
CONTENT_FIELDS = ("at", "actor", "institution", "purpose", "role", "department", "on_behalf_of", "break_glass",
                  "patient", "action", "detail")


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The one serialization a record's content digest is taken of: the :data:`CONTENT_FIELDS` as a JSON object
    with sorted keys (orjson, UTF-8), the time as ISO 8601 in UTC with microseconds, ``detail`` as the stored
    JSON text (not re-serialized, so the digest does not depend on how a reader parses it)."""
    at = fields["at"]
    if at.tzinfo is None:
        raise ValueError("naive datetime given to the audit; times must carry a zone")
    document = {name: fields[name] for name in CONTENT_FIELDS}
    document["at"] = at.astimezone(UTC).isoformat(timespec="microseconds")
    document["break_glass"] = bool(fields["break_glass"])  # SQLite keeps 0/1
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def content_digest(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(fields)).hexdigest()


def chain_digest(previous: str, content: str) -> str:
    """What the PostgreSQL trigger computes: ``encode(sha256(convert_to(previous || content, 'UTF8')), 'hex')``."""
    return hashlib.sha256((previous + content).encode("ascii")).hexdigest()


def sealed(conn: Connection, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The audit row of ``fields`` (the :data:`CONTENT_FIELDS`) with its digests and place in the chain, to be
    inserted in ``conn``'s transaction by the store's write path.

    PostgreSQL: ``seq`` and ``chain_digest`` are left to the table's trigger (no round trip here). SQLite: read
    from the chain's head. This cannot fork the chain: SQLite has one writer at a time, and the head is read
    under its write lock — taken here (``BEGIN IMMEDIATE``) unless the transaction holds it already. Should the
    transaction hold only a read snapshot (an explicit deferred ``BEGIN``), its insert can take the write lock
    only if no other writer committed since that snapshot was taken, else SQLite refuses it
    (SQLITE_BUSY_SNAPSHOT) and the transaction rolls back; ``seq``'s UNIQUE constraint backs both.
    """
    row = {name: fields[name] for name in CONTENT_FIELDS}
    row["content_digest"] = content_digest(row)
    if conn.dialect.name == "postgresql":
        row["seq"] = row["chain_digest"] = None
        return row
    if not conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock the insert would take, taken before the read
    head = conn.execute(select(AuditRecord.seq, AuditRecord.chain_digest)
                        .order_by(AuditRecord.seq.desc()).limit(1)).first()
    last_seq, last_chain = head if head is not None else (0, GENESIS)
    row["seq"] = last_seq + 1
    row["chain_digest"] = chain_digest(last_chain, row["content_digest"])
    return row


@dataclass(frozen=True)
class Break:
    """The first place where the chain does not hold."""

    seq: int  # the place in the chain (for a gap: the seq expected there)
    id: int  # the record found at that place
    digest: Literal["seq", "content_digest", "chain_digest"]  # what does not match
    expected: str
    found: str

    def __str__(self) -> str:
        return f"seq {self.seq} (id {self.id}): {self.digest} expected {self.expected}, found {self.found}"


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` found: the intact records from the start and the chain digest of the last of them,
    and the first break if there is one."""

    records: int
    head: str
    broken: Break | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify(conn: Connection, batch: int = 1000) -> Verification:
    """Walk the chain in ``seq`` order and recompute both digests of every record; stop at the first record
    whose ``seq`` is not the next (a record removed, or renumbered), whose content digest does not match its
    fields (a record changed) or whose chain digest does not follow from its predecessor's (a record changed
    with its content digest, or moved). Streams the records, ``batch`` at a time."""
    columns = [getattr(AuditRecord, name) for name in CONTENT_FIELDS]
    rows = conn.execution_options(yield_per=batch).execute(
        select(AuditRecord.id, AuditRecord.seq, AuditRecord.content_digest, AuditRecord.chain_digest, *columns)
        .order_by(AuditRecord.seq))
    count, head = 0, GENESIS
    try:
        for row in rows:
            fields = row._mapping
            expected_seq = count + 1
            if row.seq != expected_seq:
                return Verification(count, head, Break(expected_seq, row.id, "seq", str(expected_seq), str(row.seq)))
            content = content_digest(fields)
            if row.content_digest != content:
                return Verification(count, head,
                                    Break(row.seq, row.id, "content_digest", content, row.content_digest))
            chained = chain_digest(head, content)
            if row.chain_digest != chained:
                return Verification(count, head, Break(row.seq, row.id, "chain_digest", chained, row.chain_digest))
            count, head = expected_seq, chained
    finally:
        rows.close()  # a server-side cursor (PostgreSQL) left at a break
    return Verification(count, head)

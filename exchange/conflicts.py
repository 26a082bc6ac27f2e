"""Which result events about to be published contradict what the store already holds (read-only).

Rules implemented (docs/rules.md, "Statuses and versions"):

- the natural key ``(issuer, result_id, version)`` names one content: an event whose key is stored with the
  same content is a resend (idempotent, not a conflict); with other content — other values, status, times,
  or another patient — it is a conflict, which the door refuses instead of letting the store drop it;
- an event whose version is its status rank (the source sent no explicit version) while its result already
  has a higher stored version is refused: it would be stored and never shown. The sender must send an
  explicit version above the stored one, so a correction always supersedes or is refused;
- two events of one submission with the same key and different content conflict with each other.

Content is compared as :func:`schemas.content.content_digest`: the event without what legitimately differs
between two sendings of one report (the delivery, the mapping's outcome, the offset of instants).

The check is as good as the store is current: an event published but not yet stored by the engine is not
seen; the store's natural key then keeps the first of two conflicting versions.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy import Connection, and_, or_, select

from exchange.store.models import Result
from schemas.content import content_digest

#: Keys per SELECT: a Bundle with many reports is looked up in a few statements of bounded size.
KEYS_PER_QUERY = 200


class Candidate(Protocol):
    """An event about to be published, whether its version was sent explicitly, and where it came from."""

    @property
    def event(self) -> dict[str, Any]: ...

    @property
    def version_explicit(self) -> bool: ...

    @property
    def location(self) -> str | None: ...


@dataclass(frozen=True)
class Conflict:
    """Why one candidate cannot be published: ``kind`` is ``content`` (same key, other content) or
    ``version`` (a status-rank version under a higher stored one)."""

    kind: str
    issuer: str
    result_id: str
    version: int
    highest_stored: int | None
    location: str | None
    message: str


def _chunks(keys: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(keys), size):
        yield keys[start:start + size]


def _stored_versions(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[int]]:
    versions: dict[tuple[str, str], set[int]] = {}
    for chunk in _chunks(keys, KEYS_PER_QUERY):
        query = select(Result.issuer, Result.result_id, Result.version).where(
            or_(*(and_(Result.issuer == issuer, Result.result_id == rid) for issuer, rid in chunk)))
        for issuer, rid, version in conn.execute(query):
            versions.setdefault((issuer, rid), set()).add(version)
    return versions


def stored_digests(conn: Connection, keys: Sequence[tuple[str, str, int]]) -> dict[tuple[str, str, int], str]:
    """The :func:`content_digest` of each stored version among ``keys`` (issuer, result id, version)."""
    digests: dict[tuple[str, str, int], str] = {}
    for chunk in _chunks(keys, KEYS_PER_QUERY):
        query = select(Result.issuer, Result.result_id, Result.version, Result.event).where(
            or_(*(and_(Result.issuer == i, Result.result_id == r, Result.version == v) for i, r, v in chunk)))
        for issuer, rid, version, event in conn.execute(query):
            digests[(issuer, rid, version)] = content_digest(orjson.loads(event))
    return digests


@dataclass(frozen=True)
class StoreCheck:
    """The outcome of :func:`check_against_store`: conflicts in candidate order, and the keys of the
    candidates already stored with the same content (resends)."""

    conflicts: list[Conflict]
    resent: set[tuple[str, str, int]]


def find_conflicts(conn: Connection, candidates: Sequence[Candidate],
                   version_field: str = "meta.versionId") -> list[Conflict]:
    """The conflicts of ``candidates`` with the store and with each other, in candidate order (rules above)."""
    return check_against_store(conn, candidates, version_field).conflicts


def check_against_store(conn: Connection, candidates: Sequence[Candidate],
                        version_field: str = "meta.versionId") -> StoreCheck:
    """The conflicts of ``candidates`` (rules above) and which of them are resends.

    ``version_field`` names the source's explicit version in the messages (FHIR: ``meta.versionId``).
    """
    if not candidates:
        return StoreCheck([], set())
    keys = [(c.event["issuer"], c.event["result_id"], int(c.event["version"])) for c in candidates]
    stored = _stored_versions(conn, sorted({(i, r) for i, r, _ in keys}))
    same_version = sorted({k for k in keys if k[2] in stored.get(k[:2], ())})
    stored_digest = stored_digests(conn, same_version) if same_version else {}
    first_in_batch: dict[tuple[str, str, int], str] = {}
    found: list[Conflict] = []
    resent: set[tuple[str, str, int]] = set()
    for candidate, key in zip(candidates, keys):
        issuer, rid, version = key
        digest = content_digest(candidate.event)
        highest = max(stored[key[:2]]) if key[:2] in stored else None
        label = f"report {rid!r} of {issuer}"
        if key in stored_digest:
            if stored_digest[key] != digest:
                found.append(Conflict(
                    "content", issuer, rid, version, highest, candidate.location,
                    f"{label} version {version} is already stored with different content; a changed report "
                    f"needs a new version: send {version_field} greater than {highest}"))
            else:
                resent.add(key)
            continue
        if not candidate.version_explicit and highest is not None and highest > version:
            found.append(Conflict(
                "version", issuer, rid, version, highest, candidate.location,
                f"{label} has stored version {highest}, above version {version} that its status "
                f"{candidate.event['status']!r} stands for without {version_field}: it would never be shown; "
                f"send {version_field} greater than {highest}"))
            continue
        earlier = first_in_batch.setdefault(key, digest)
        if earlier != digest:
            found.append(Conflict(
                "content", issuer, rid, version, highest, candidate.location,
                f"{label} version {version} appears twice in this submission with different content"))
    return StoreCheck(found, resent)

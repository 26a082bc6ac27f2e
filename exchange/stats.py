"""Regulator statistics (docs/rules.md, "Recognition rate and savings"): presented, accepted, rejected by reason, recognition rate, savings.

recognition rate = accepted / (recognizable results presented − rejections whose reason does not count)
savings (avoided cost) = sum of the prices of accepted (hence not repeated) items, at the requesting
institution's provincial price.
CDS Hooks override rate = cards overridden / cards presented through CDS Hooks (exchange.cds), overall and per
reason code (DOMAIN §7: how often a reason-required soft stop is overridden, and why).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from exchange.store.models import Decision, IssuedCard, Presentation


def in_scope(book: Any, institution_id: str, scope: str | None) -> bool:
    """``scope``: national (or none), a region id, an alliance id, a 2-digit province, a 4-digit city, a
    6-digit division or an institution id."""
    if scope in (None, "", "national"):
        return True
    inst = book.institutions.get(institution_id)
    if inst is None:
        return False
    if scope == institution_id or scope in inst.alliances or scope in book.region_ids(inst):
        return True
    if scope.isdigit() and len(scope) in (2, 4):
        return inst.division.startswith(scope)
    if scope.isdigit() and len(scope) == 6:  # GB/T 2260: 330000 province, 330100 city, 330106 county
        prefix = scope[:2] if scope.endswith("0000") else scope[:4] if scope.endswith("00") else scope
        return inst.division.startswith(prefix)
    return False


def scope_within(book: Any, inner: str | None, outer: str | None) -> bool:
    """Whether every institution of scope ``inner`` lies in scope ``outer`` (an operator's, an auditor's)."""
    if outer in (None, "", "national"):
        return True
    if inner in (None, "", "national"):
        return False
    members = [i for i in book.institutions if in_scope(book, i, inner)]
    return bool(members) and all(in_scope(book, i, outer) for i in members)


def valid_scope(book: Any, scope: str | None) -> bool:
    if scope in (None, "", "national") or scope in book.institutions or scope in book.regions:
        return True
    if scope in getattr(book, "alliances", {}):
        return True
    return scope.isdigit() and len(scope) in (2, 4, 6)


def statistics(conn: Connection, book: Any, scope: str | None, start: datetime, end: datetime) -> dict[str, Any]:
    """Figures for requesting institutions inside ``scope`` over [start, end)."""
    requesters = {i for i in book.institutions if in_scope(book, i, scope)}
    presented_rows = conn.execute(
        select(Presentation.requesting_institution, Presentation.result_issuer, Presentation.item_code,
               func.count()).where(Presentation.presented_at >= start, Presentation.presented_at < end)
        .group_by(Presentation.requesting_institution, Presentation.result_issuer, Presentation.item_code)).all()
    decisions = Session(conn).scalars(select(Decision).where(Decision.decided_at >= start, Decision.decided_at < end)
                                      .order_by(Decision.decided_at, Decision.id)).all()
    presented: Counter[str] = Counter()
    per_issuer: dict[str, Counter[str]] = defaultdict(Counter)
    per_item: dict[str, Counter[str]] = defaultdict(Counter)
    for requester, issuer, item, count in presented_rows:
        if requester in requesters:
            presented["all"] += count
            per_issuer[issuer]["presented"] += count
            per_item[item]["presented"] += count
    revoked = {d.revokes for d in decisions if d.decision == "revoke"}
    standing: dict[tuple[str, ...], Decision] = {}
    for d in decisions:
        if d.decision == "revoke" or d.decision_id in revoked or d.requesting_institution not in requesters:
            continue
        standing[(d.requesting_institution, d.encounter_id, d.result_issuer, d.result_id, d.item_code or "")] = d
    reasons = book.reason_codes
    accepted = 0
    rejected: Counter[str] = Counter()
    excluded = 0
    avoided = Decimal("0")
    for d in standing.values():
        key = "accepted" if d.decision == "accept" else "rejected"
        per_issuer[d.result_issuer][key] += 1
        per_item[d.item_code or "-"][key] += 1
        if d.decision == "accept":
            accepted += 1
            price = book.price(d.item_code, book.institutions[d.requesting_institution].province) if d.item_code else None
            avoided += price or Decimal("0")
        else:
            rejected[d.reason_code or "?"] += 1
            if d.reason_code in reasons and not reasons[d.reason_code].counts_as_non_recognition:
                excluded += 1
    denominator = presented["all"] - excluded
    cds = cds_statistics(conn, book, requesters, start, end)
    return {
        "scope": scope or "national", "from": start.isoformat(), "to": end.isoformat(),
        "requesting_institutions": len(requesters),
        "presented": presented["all"], "accepted": accepted, "rejected": sum(rejected.values()),
        "rejected_by_reason": {code: {"count": n, "reason_zh": reasons[code].zh if code in reasons else None,
                                      "counts_as_non_recognition": reasons[code].counts_as_non_recognition
                                      if code in reasons else None}
                               for code, n in sorted(rejected.items())},
        "excluded_from_denominator": excluded,
        "recognition_rate": round(accepted / denominator, 4) if denominator > 0 else None,
        "avoided_cost_cny": float(avoided),
        "per_issuer": {k: dict(v) for k, v in sorted(per_issuer.items())},
        "per_item": {k: dict(v) for k, v in sorted(per_item.items())},
        "cds": cds,
    }


def _rate(count: int, of: int) -> float | None:
    return round(count / of, 4) if of > 0 else None


def cds_statistics(conn: Connection, book: Any, requesters: set[str], start: datetime, end: datetime
                   ) -> dict[str, Any]:
    """Cards issued through CDS Hooks to ``requesters`` over [start, end): how many were presented, accepted
    and overridden, and the override rate overall and per reason code (``none``: overridden without a reason)."""
    rows = conn.execute(
        select(IssuedCard.requesting_institution, IssuedCard.outcome, IssuedCard.override_reason, func.count())
        .where(IssuedCard.issued_at >= start, IssuedCard.issued_at < end)
        .group_by(IssuedCard.requesting_institution, IssuedCard.outcome, IssuedCard.override_reason)).all()
    presented = accepted = overridden = 0
    by_reason: Counter[str] = Counter()
    for requester, outcome, reason, count in rows:
        if requester not in requesters:
            continue
        presented += count
        if outcome == "accepted":
            accepted += count
        elif outcome == "overridden":
            overridden += count
            by_reason[reason or "none"] += count
    reasons = book.reason_codes
    return {"presented": presented, "accepted": accepted, "overridden": overridden,
            "override_rate": _rate(overridden, presented),
            "overridden_by_reason": {code: {"count": n, "rate": _rate(n, presented),
                                            "reason_zh": reasons[code].zh if code in reasons else None}
                                     for code, n in sorted(by_reason.items())}}

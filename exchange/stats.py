"""Regulator statistics (docs/rules.md, "Recognition rate and savings"): presented, accepted, rejected by reason, recognition rate, savings.

recognition rate = accepted / (recognizable results presented − rejections whose reason does not count)
savings (avoided cost) = sum of the prices of accepted (hence not repeated) items, at the requesting
institution's provincial price.
CDS Hooks override rate = cards overridden / cards presented through CDS Hooks (exchange.cds), overall and per
reason code (DOMAIN §7: how often a reason-required soft stop is overridden, and why).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from codes.calendar import beijing_date
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


def _figures(conn: Connection, book: Any, scope: str | None, start: datetime, end: datetime, issuer: str | None,
             item: str | None, timed: bool = False) -> tuple[set[str], list[Any], list[Decision]]:
    """The requesting institutions inside ``scope``; the presentations to them in [start, end) as (issuer, item,
    requester, count), or with ``timed`` one per presentation as (issuer, item, requester, presented_at); their
    decisions still standing (the last per subject, revoked ones left out)."""
    requesters = {i for i in book.institutions if in_scope(book, i, scope)}
    columns = (Presentation.result_issuer, Presentation.item_code, Presentation.requesting_institution)
    query = (select(*columns, Presentation.presented_at) if timed else select(*columns, func.count()).group_by(*columns))
    query = query.where(Presentation.presented_at >= start, Presentation.presented_at < end)
    decisions_query = select(Decision).where(Decision.decided_at >= start, Decision.decided_at < end)
    if issuer is not None:
        query = query.where(Presentation.result_issuer == issuer)
        decisions_query = decisions_query.where(Decision.result_issuer == issuer)
    if item is not None:
        query = query.where(Presentation.item_code == item)
        decisions_query = decisions_query.where(Decision.item_code == item)
    presented = [row for row in conn.execute(query).all() if row[2] in requesters]
    decisions = Session(conn).scalars(decisions_query.order_by(Decision.decided_at, Decision.id)).all()
    revoked = {d.revokes for d in decisions if d.decision == "revoke"}
    standing: dict[tuple[str, ...], Decision] = {}
    for d in decisions:
        if d.decision == "revoke" or d.decision_id in revoked or d.requesting_institution not in requesters:
            continue
        standing[(d.requesting_institution, d.encounter_id, d.result_issuer, d.result_id, d.item_code or "")] = d
    return requesters, presented, list(standing.values())


def _price(book: Any, d: Decision) -> Decimal:
    price = book.price(d.item_code, book.institutions[d.requesting_institution].province) if d.item_code else None
    return price or Decimal("0")


def statistics(conn: Connection, book: Any, scope: str | None, start: datetime, end: datetime, *,
               issuer: str | None = None, item: str | None = None) -> dict[str, Any]:
    """Figures for requesting institutions inside ``scope`` over [start, end); ``issuer`` and ``item`` narrow
    them to one issuer's results or one item (the drill-down of a per-issuer or per-item row)."""
    requesters, presented_rows, standing = _figures(conn, book, scope, start, end, issuer, item)
    presented: Counter[str] = Counter()
    per_issuer: dict[str, Counter[str]] = defaultdict(Counter)
    per_item: dict[str, Counter[str]] = defaultdict(Counter)
    avoided_per_issuer: dict[str, Decimal] = defaultdict(Decimal)
    avoided_per_item: dict[str, Decimal] = defaultdict(Decimal)
    for result_issuer, item_code, _, count in presented_rows:
        presented["all"] += count
        per_issuer[result_issuer]["presented"] += count
        per_item[item_code]["presented"] += count
    reasons = book.reason_codes
    accepted = 0
    rejected: Counter[str] = Counter()
    excluded = 0
    avoided = Decimal("0")
    for d in standing:
        key = "accepted" if d.decision == "accept" else "rejected"
        per_issuer[d.result_issuer][key] += 1
        per_item[d.item_code or "-"][key] += 1
        if d.decision == "accept":
            accepted += 1
            price = _price(book, d)
            avoided += price
            avoided_per_issuer[d.result_issuer] += price
            avoided_per_item[d.item_code or "-"] += price
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
        "avoided_cost_per_issuer": {k: float(v) for k, v in sorted(avoided_per_issuer.items())},
        "avoided_cost_per_item": {k: float(v) for k, v in sorted(avoided_per_item.items())},
        "cds": cds,
    }


def bucket_start(instant: datetime, bucket: str) -> date:
    """The Beijing calendar day (``day``) or the Monday of the ISO week (``week``) an instant falls in."""
    day = beijing_date(instant)
    return day - timedelta(days=day.weekday()) if bucket == "week" else day


def timeseries(conn: Connection, book: Any, scope: str | None, start: datetime, end: datetime, bucket: str, *,
               issuer: str | None = None, item: str | None = None) -> list[dict[str, Any]]:
    """Per Beijing day or ISO week of [start, end), oldest first and without gaps: presented (by when shown),
    accepted and rejected by reason (by when decided, counting the decisions standing at ``end``), the
    recognition rate of the bucket (docs/rules.md, as :func:`statistics`) and the avoided cost."""
    _, presented_rows, standing = _figures(conn, book, scope, start, end, issuer, item, timed=True)
    first, last = bucket_start(start, bucket), bucket_start(end - timedelta(microseconds=1), bucket)
    step = timedelta(days=7 if bucket == "week" else 1)
    buckets: dict[date, dict[str, Any]] = {}
    day = first
    while day <= last:
        buckets[day] = {"start": day.isoformat(), "presented": 0, "accepted": 0, "rejected": 0,
                        "rejected_by_reason": Counter(), "excluded_from_denominator": 0, "avoided": Decimal("0")}
        day += step
    for _, _, _, presented_at in presented_rows:
        buckets[bucket_start(presented_at, bucket)]["presented"] += 1
    reasons = book.reason_codes
    for d in standing:
        row = buckets[bucket_start(d.decided_at, bucket)]
        if d.decision == "accept":
            row["accepted"] += 1
            row["avoided"] += _price(book, d)
        else:
            row["rejected"] += 1
            row["rejected_by_reason"][d.reason_code or "?"] += 1
            if d.reason_code in reasons and not reasons[d.reason_code].counts_as_non_recognition:
                row["excluded_from_denominator"] += 1
    series = []
    for row in buckets.values():
        by_reason, avoided = row.pop("rejected_by_reason"), row.pop("avoided")
        denominator = row["presented"] - row["excluded_from_denominator"]
        series.append({**row, "rejected_by_reason": dict(sorted(by_reason.items())), "avoided_cost_cny": float(avoided),
                       "recognition_rate": round(row["accepted"] / denominator, 4) if denominator > 0 else None})
    return series


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

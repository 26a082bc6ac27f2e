"""Operator views: regulator statistics and the audit trail of a patient's data."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, Field, WithJsonSchema

from codes.calendar import BEIJING, beijing_date, beijing_midnight
from codes.targets import coverage_targets
from codes.tools import coverage
from exchange import audit
from exchange.api.access import require, within_scope
from exchange.api.app import ApiError, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER, IsoDate, Pseudonym, Tier, Timestamp
from exchange.api.tables import TABLE_RESPONSES, Table, TableFormat, answer_table
from exchange.auth.principal import Principal
from exchange.auth.roles import purposes
from exchange.stats import in_scope, statistics, timeseries, valid_scope

router = APIRouter(prefix="/api/v1", tags=["operators"], responses=AUTHENTICATED)

#: Per issuer or item: how many presented, accepted, rejected (a count that stayed zero is left out).
Counts = dict[Literal["presented", "accepted", "rejected"], int]


class RejectedFor(BaseModel):
    model_config = ANSWER

    count: int
    reason_zh: str | None = Field(description="null for a code the code book no longer lists")
    counts_as_non_recognition: bool | None


class OverriddenFor(BaseModel):
    model_config = ANSWER

    count: int
    rate: float | None = Field(description="overridden for this reason / cards presented")
    reason_zh: str | None = Field(description="null for `none` (no reason given) or a code the book no longer lists")


class CdsFigures(BaseModel):
    """Cards of the CDS Hooks services (order-select, order-sign, patient-view) and what clinicians did."""

    model_config = ANSWER

    presented: int = Field(description="cards issued")
    accepted: int = Field(description="cards fed back as accepted")
    overridden: int = Field(description="cards fed back as overridden")
    override_rate: float | None = Field(description="overridden / presented; null when none was presented")
    overridden_by_reason: dict[str, OverriddenFor] = Field(description="by reason code; `none`: without a reason")


class Statistics(BaseModel):
    """docs/rules.md, "Reason codes": recognition rate = accepted / (presented − rejections whose reason does not
    count as non-recognition); avoided cost = the prices of accepted items at the requester's provincial price."""

    model_config = ANSWER

    scope: str
    from_: Timestamp = Field(alias="from")
    to: Timestamp
    requesting_institutions: int = Field(description="requesting institutions inside the scope")
    presented: int = Field(description="recognizable results presented, once per encounter")
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, RejectedFor]
    excluded_from_denominator: int
    recognition_rate: float | None = Field(description="null when nothing counts in the denominator")
    avoided_cost_cny: float
    per_issuer: dict[str, Counts]
    per_item: dict[str, Counts]
    avoided_cost_per_issuer: dict[str, float] = Field(description="CNY, issuers with an accepted result")
    avoided_cost_per_item: dict[str, float] = Field(description="CNY, items accepted")
    cds: CdsFigures = Field(description="CDS Hooks: cards presented, accepted and overridden (override rates)")


class AuditEntry(BaseModel):
    model_config = ANSWER

    at: Timestamp
    patient: Pseudonym | None = Field(description="whose data; null for a record about no one patient")
    actor: str
    institution: str | None
    purpose: str = Field(description=f"why the data was read (one of {', '.join(purposes())})")
    role: str | None = Field(description="the reader's role")
    department: str | None
    on_behalf_of: str | None = Field(description="the clinician a system (HIS) read for")
    break_glass: bool = Field(description="an emergency read outside the reader's normal rights")
    action: str = Field(description="what was done: `recognition.check`, `patient.results`, `decision.accept`, ...")
    detail: dict[str, Any]


class AuditTrail(BaseModel):
    model_config = ANSWER

    patient: Pseudonym | None = Field(description="the patient asked about, if one was")
    records: list[AuditEntry] = Field(description="break-glass reads first, then newest first")


#: The tables of GET /stats, as CSV or Excel (``table=``).
StatsTable = Literal["per_issuer", "per_item", "rejected_by_reason"]
_SCOPE = Query(None, description="national, region id, alliance id, province/city/division code or institution id")


def _period(date_from: datetime | None, date_to: datetime | None) -> tuple[datetime, datetime]:
    end = date_to or datetime.now(BEIJING)
    start = date_from or end - timedelta(days=30)
    if start >= end:
        raise ApiError("from", "from must be before to")
    return start, end


def _operator_scope(request: Request, who: Principal, scope: str | None) -> str:
    book = context_of(request).book
    if not valid_scope(book, scope):
        raise ApiError("scope", f"unknown scope {scope!r}")
    return within_scope(who, book, scope, "scope")


def _drill(request: Request, issuer: str | None, item: str | None) -> None:
    book = context_of(request).book
    if issuer is not None and issuer not in book.institutions:
        raise ApiError("issuer", f"unknown institution {issuer!r}")
    if item is not None and item not in book.items:
        raise ApiError("item", f"unknown unified item {item!r}")


def stats_table(book: Any, figures: dict[str, Any], table: str) -> Table:
    """One table of the statistics, one row per issuer, item or reason code, with names for people."""
    if table == "rejected_by_reason":
        return Table("rejected-by-reason", ["reason_code", "reason_zh", "count", "counts_as_non_recognition"],
                     [{"reason_code": code, **row} for code, row in figures["rejected_by_reason"].items()])
    per, names, key = ((figures["per_issuer"], book.institutions, "issuer") if table == "per_issuer"
                       else (figures["per_item"], book.items, "item"))
    avoided = figures[f"avoided_cost_{table}"]
    rows = [{key: code, "name_zh": names[code].name_zh if code in names else None, "presented": 0, "accepted": 0,
             "rejected": 0, **counts, "avoided_cost_cny": avoided.get(code, 0.0)} for code, counts in per.items()]
    return Table(table.replace("_", "-"), [key, "name_zh", "presented", "accepted", "rejected", "avoided_cost_cny"],
                 rows)


@router.get("/stats", summary="Presented, accepted, rejected by reason, recognition rate, avoided cost",
            response_model=Statistics, responses={**refusals(422), **TABLE_RESPONSES})
def stats(request: Request, scope: str | None = _SCOPE,
          date_from: AwareDatetime | None = Query(None, alias="from"),
          date_to: AwareDatetime | None = Query(None, alias="to"),
          issuer: str | None = Query(None, max_length=64, description="drill-down: one issuer's results"),
          item: str | None = Query(None, max_length=16, description="drill-down: one unified item"),
          format: TableFormat | None = None,  # noqa: A002
          table: StatsTable = Query("per_issuer", description="which table `format=csv|xlsx` exports"),
          who: Principal = Depends(require("operator", purpose="operations"))) -> Any:  # noqa: B008
    """For the operator's scope, or a scope inside it (the default: the operator's own); ``issuer`` or ``item``
    narrows every figure to one row of ``per_issuer`` or ``per_item`` (its ``per_item`` or ``per_issuer`` is then
    the drill-down)."""
    context = context_of(request)
    scope = _operator_scope(request, who, scope)
    _drill(request, issuer, item)
    start, end = _period(date_from, date_to)
    with context.database.connect() as conn:
        figures = statistics(conn, context.book, scope, start, end, issuer=issuer, item=item)
    return answer_table(request, format, stats_table(context.book, figures, table), lambda: figures)


class CoverageTarget(BaseModel):
    model_config = ANSWER

    more_than: int | None = Field(description="items the scope's catalogues must exceed; null: no count")
    all_items: bool = Field(description="every unified item (alliances)")
    due: IsoDate = Field(description="the last day the target must be met by")
    source: str


class CoverageRow(BaseModel):
    model_config = ANSWER

    tier: Tier
    scope: str
    scope_name: str
    catalogues: list[str] = Field(description="catalogue ids in force for this tier and scope (items unioned)")
    lab: int
    exam: int
    total: int
    target: CoverageTarget
    meets: bool | None = Field(description="null for a tier without a count target")
    gap: int | None = Field(description="items still missing; 0 when met")
    overdue: bool = Field(description="the due date has passed and the target is not met")


class Coverage(BaseModel):
    model_config = ANSWER

    at: Timestamp
    scope: str
    codes_version: str
    items_total: int
    rows: list[CoverageRow] = Field(description="per tier (alliance → national) and scope")


@router.get("/stats/coverage", summary="Catalogue coverage per tier and scope against the 2025 / 2027 targets",
            response_model=Coverage, responses={**refusals(422), **TABLE_RESPONSES})
def catalogue_coverage(request: Request, scope: str | None = _SCOPE, at: AwareDatetime | None = None,
                       format: TableFormat | None = None,  # noqa: A002
                       who: Principal = Depends(require("operator", purpose="operations"))) -> Any:  # noqa: B008
    """As ``hrx catalogue coverage``: the catalogues in force at ``at`` (default now) per tier and scope, whose
    scope reaches an institution inside the asked scope; targets from codes/data/coverage_targets.csv."""
    context = context_of(request)
    book = context.book
    scope = _operator_scope(request, who, scope)
    moment = at or datetime.now(BEIJING)
    members = [book.institutions[i] for i in book.institutions if in_scope(book, i, scope)]
    in_force = {c.id: c for c in book.catalogues_in_force(moment)}
    targets = coverage_targets()
    rows = []
    for row in coverage(book, moment):
        if not any(in_force[cid].covers(inst, book) for cid in row.catalogues for inst in members):
            continue
        goal = targets[row.tier]
        rows.append({"tier": row.tier, "scope": row.scope, "scope_name": row.scope_name,
                     "catalogues": list(row.catalogues), "lab": row.lab, "exam": row.exam, "total": row.total,
                     "target": {"more_than": goal.more_than, "all_items": goal.all_items,
                                "due": goal.due.isoformat(), "source": goal.source},
                     "meets": row.meets, "gap": row.gap,
                     "overdue": row.meets is False and beijing_date(moment) > goal.due})
    body = {"at": moment.isoformat(), "scope": scope, "codes_version": book.version, "items_total": len(book.items),
            "rows": rows}
    flat = [{**{k: v for k, v in r.items() if k != "target"}, "catalogues": ",".join(r["catalogues"]),
             "target_more_than": r["target"]["more_than"], "target_all_items": r["target"]["all_items"],
             "due": r["target"]["due"]} for r in rows]
    table = Table("coverage", ["tier", "scope", "scope_name", "catalogues", "lab", "exam", "total",
                               "target_more_than", "target_all_items", "due", "meets", "gap", "overdue"], flat)
    return answer_table(request, format, table, lambda: body)


class Bucket(BaseModel):
    model_config = ANSWER

    start: IsoDate = Field(description="the Beijing day, or the Monday of the ISO week")
    presented: int
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int]
    excluded_from_denominator: int
    recognition_rate: float | None
    avoided_cost_cny: float


class TimeSeries(BaseModel):
    model_config = ANSWER

    scope: str
    from_: Timestamp = Field(alias="from")
    to: Timestamp
    bucket: Literal["day", "week"]
    issuer: str | None
    item: str | None
    series: list[Bucket] = Field(description="oldest first, every bucket of the period (zeros included)")


@router.get("/stats/timeseries", summary="Recognition rate, rejections by reason and avoided cost per day or week",
            response_model=TimeSeries, responses={**refusals(422), **TABLE_RESPONSES})
def stats_timeseries(request: Request, scope: str | None = _SCOPE,
                     date_from: AwareDatetime | None = Query(None, alias="from"),
                     date_to: AwareDatetime | None = Query(None, alias="to"),
                     bucket: Literal["day", "week"] = "day",
                     issuer: str | None = Query(None, max_length=64), item: str | None = Query(None, max_length=16),
                     format: TableFormat | None = None,  # noqa: A002
                     who: Principal = Depends(require("operator", purpose="operations"))) -> Any:  # noqa: B008
    """The figures of GET /stats per Beijing day or ISO week (at most 400 buckets): presentations by when they
    were shown, decisions (standing at the period's end) by when they were made."""
    context = context_of(request)
    scope = _operator_scope(request, who, scope)
    _drill(request, issuer, item)
    start, end = _period(date_from, date_to)
    if (end - start).days // (7 if bucket == "week" else 1) > 400:
        raise ApiError("from", f"at most 400 {bucket}s per series")
    with context.database.connect() as conn:
        series = timeseries(conn, context.book, scope, start, end, bucket, issuer=issuer, item=item)
    body = {"scope": scope, "from": start.isoformat(), "to": end.isoformat(), "bucket": bucket, "issuer": issuer,
            "item": item, "series": series}
    table = Table(f"timeseries-{bucket}", ["start", "presented", "accepted", "rejected", "excluded_from_denominator",
                                           "recognition_rate", "avoided_cost_cny", "rejected_by_reason"], series)
    return answer_table(request, format, table, lambda: body)


#: A bound of a period as the auditor gives it: a Beijing calendar date, or an instant with its UTC offset.
DayOrMoment = Annotated[str, WithJsonSchema({"anyOf": [{"type": "string", "format": "date"},
                                                      {"type": "string", "format": "date-time"}]})]


def _bound(name: str, text: str | None, *, end: bool) -> datetime | None:
    """The instant a period bound stands for, as a half-open ``[start, end)`` bound. A bare date is that Beijing
    day (Asia/Shanghai): as ``since`` its first instant, as ``until`` the first instant of the next day, so that
    the day is inside the period whatever the reader's own zone. An instant must carry its offset (a naive one is
    ambiguous); as ``until`` it is included: records are stored to the microsecond on both stores, so
    ``< until + 1 µs`` is ``≤ until``."""
    if text is None:
        return None
    try:
        if len(text) == 10:  # YYYY-MM-DD: fromisoformat would also read it as a naive midnight
            day = date.fromisoformat(text)
            bound = beijing_midnight(day + timedelta(days=1) if end else day)
        else:
            instant = datetime.fromisoformat(text)
            if instant.tzinfo is None:
                raise ApiError(name, f"{text!r} has no UTC offset: give one (+08:00 for Beijing time) or a bare "
                                     "date")
            bound = instant + timedelta(microseconds=1) if end else instant
        bound.astimezone(UTC)  # as the store will write it: the years 1 and 9999 overflow there
    except (ValueError, OverflowError):
        raise ApiError(name, f"{text!r} is neither a date (2026-12-01) nor an instant with its offset "
                             "(2026-12-01T08:00:00+08:00)") from None
    return bound


@router.get("/audit", summary="The audit: by patient, principal, institution and period, break-glass reads first",
            response_model=AuditTrail, responses=refusals(422))
def audit_trail(request: Request, patient: str | None = Query(None, pattern="^[0-9a-f]{64}$"),
                principal: str | None = Query(None, max_length=64, description="an account or client id"),
                institution: str | None = Query(None, max_length=64),
                since: DayOrMoment | None = Query(None, max_length=40, description="records made then or later: "
                                                  "a date (from the start of that Beijing day) or an instant with "
                                                  "its offset"),
                until: DayOrMoment | None = Query(None, max_length=40, description="records made then or earlier: "
                                                  "a date (to the end of that Beijing day) or an instant with its "
                                                  "offset"),
                break_glass: bool = Query(False, description="only break-glass reads (the review queue)"),
                limit: int = Query(500, ge=1, le=5000),
                who: Principal = Depends(require("auditor", purpose="audit"))) -> dict[str, Any]:  # noqa: B008
    """Records of reads by institutions inside the auditor's scope (all of them for a national auditor) in the
    period ``since`` – ``until`` (both included; a bare date is a whole Beijing day); the listing is itself
    audited."""
    context = context_of(request)
    if institution is not None:
        within_scope(who, context.book, institution, "institution")
    start, end = _bound("since", since, end=False), _bound("until", until, end=True)
    if start is not None and end is not None and start >= end:
        raise ApiError("since", "since must not be after until")
    # A scoped auditor's institutions go into the query (not a filter of its answer): the limit then counts
    # records the auditor may see, and no period or page comes back short.
    scoped = None if who.scope in (None, "national") else [
        i for i in context.book.institutions if in_scope(context.book, i, who.scope)]
    with context.database.begin() as conn:
        records = audit.trail(conn, patient, limit, principal=principal, institution=institution,
                              break_glass_only=break_glass, start=start, end=end, institutions=scoped)
        audit.record(conn, who.actor("audit"), "audit.read", patient,
                     {"records": len(records), "principal": principal, "institution": institution,
                      "break_glass": break_glass, "since": since, "until": until})
    return {"patient": patient, "records": records}

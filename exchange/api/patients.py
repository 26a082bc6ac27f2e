"""``GET /api/v1/patients/{pseudonym}/results``: one patient's results across hospitals, as a timeline."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from codes.calendar import beijing_date, beijing_iso
from exchange import audit
from exchange.api.access import patient_read, require, withhold_blocked
from exchange.api.app import ApiError, Context, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER, Pseudonym, ResultStatus, Timestamp
from exchange.api.result_parts import ImagingReport, ResultValue, Study
from exchange.audit import Actor
from exchange.auth.principal import Principal
from exchange.decisions import result_ref
from exchange.recognize import items_of
from exchange.store import StoredResult, current_results

router = APIRouter(prefix="/api/v1", tags=["patients"], responses=AUTHENTICATED)


class TimelineResult(BaseModel):
    """One result (its current version) with every value it reports."""

    model_config = ANSWER

    ref: str = Field(description="`<issuer>/<result_id>`")
    issuer: str
    issuer_name: str | None
    kind: Literal["lab", "imaging"]
    version: int
    status: ResultStatus
    item: str | None = Field(description="the report's unified item; null when its code is not mapped")
    local_code: str
    reported_at: Timestamp
    collected_at: Timestamp | None
    values: list[ResultValue]
    report: ImagingReport = Field(description="imaging: the report; null for lab results")
    study: Study | None = Field(description="imaging: the study; null for lab results")


class SeriesPoint(BaseModel):
    model_config = ANSWER

    at: Timestamp = Field(description="when the specimen was collected, else when the result was reported")
    value: float
    unit: str | None
    issuer: str


class Timeline(BaseModel):
    model_config = ANSWER

    patient: Pseudonym
    results: list[TimelineResult]
    series: dict[str, list[SeriesPoint]] = Field(description="per unified item, its numeric values oldest first")


@router.get("/patients/{pseudonym}/results", summary="Timeline across hospitals; numeric items also as series",
            response_model=Timeline, responses=refusals(422))
def timeline(request: Request, pseudonym: str = Path(pattern="^[0-9a-f]{64}$"), item: str | None = None,
             category: str | None = None, date_from: date | None = None, date_to: date | None = None,
             who: Principal = Depends(require("clinician", "his", purpose="treatment"))  # noqa: B008
             ) -> dict[str, Any]:
    """Within a treatment relationship only; results the patient blocked are left out (break-glass excepted)."""
    context = context_of(request)

    def authorized(conn: Connection) -> tuple[list[StoredResult], Actor]:
        access = patient_read(conn, who, pseudonym)
        shown, _ = withhold_blocked(conn, context.book, current_results(conn, pseudonym), pseudonym, who, access)
        return shown, who.actor("emergency" if access.break_glass else "treatment", break_glass=access.break_glass)

    return timeline_of(context, pseudonym, authorized, item, category, date_from, date_to)


def timeline_of(context: Context, pseudonym: str, authorized: Callable[[Connection], tuple[list[StoredResult], Actor]],
                item: str | None, category: str | None, date_from: date | None, date_to: date | None
                ) -> dict[str, Any]:
    """The timeline of what ``authorized`` (run in the read's transaction) lets the reader see, filtered;
    the read is audited under the actor it returns."""
    book = context.book
    if item is not None and item not in book.items:
        raise ApiError("item", f"unknown unified item code {item!r}")
    categories = {i.category for i in book.items.values()}
    if category is not None and category not in categories:
        raise ApiError("category", f"unknown category {category!r}; known: {', '.join(sorted(categories))}")
    if date_from and date_to and date_from > date_to:
        raise ApiError("date_from", "date_from is after date_to")
    with context.database.begin() as conn:
        stored, actor = authorized(conn)
        shown = []
        for result in stored:
            day = beijing_date(result.reported_at)  # the filters are Beijing dates
            if (date_from and day < date_from) or (date_to and day > date_to):
                continue
            codes = [c for c, _ in items_of(result) if c]
            if item is not None and item not in codes:
                continue
            if category is not None and not any(book.items[c].category == category for c in codes if c in book.items):
                continue
            shown.append(result)
        audit.record(conn, actor, "patient.results", pseudonym,
                     {"filters": {"item": item, "category": category, "from": str(date_from or ""),
                                  "to": str(date_to or "")}, "results": len(shown)})
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    entries = []
    for result in shown:
        issuer = book.institutions.get(result.issuer)
        entries.append({
            "ref": result_ref(result.issuer, result.result_id), "issuer": result.issuer,
            "issuer_name": issuer.name_zh if issuer else None, "kind": result.kind, "version": result.version,
            "status": result.status, "item": result.unified_code, "local_code": result.local_code,
            "reported_at": beijing_iso(result.reported_at),
            "collected_at": beijing_iso(result.collected_at) if result.collected_at else None,
            "values": [{"item": o.unified_code, "local_code": o.local_code, "value": o.value,
                        "value_text": o.value_text, "unit": o.unit, "interpretation": o.interpretation,
                        "reference_range": {"low": o.ref_low, "high": o.ref_high, "text": o.ref_text}}
                       for o in result.observations],
            "report": result.event.get("report"), "study": result.event.get("study"),
        })
        for o in result.observations:
            if o.unified_code and o.value is not None and (item is None or o.unified_code == item):
                series[o.unified_code].append({"at": beijing_iso(result.collected_at or result.reported_at),
                                               "value": o.value, "unit": o.unit, "issuer": result.issuer})
    return {"patient": pseudonym, "results": entries,
            "series": {code: sorted(points, key=lambda p: p["at"]) for code, points in sorted(series.items())}}

"""Data quality for the platform operator: adding a mapping from the unmapped queue (a new mapping-table version,
then the re-map of stored results as a background job with progress), and the dead letters with their errors."""
from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from codes.calendar import BEIJING
from codes.mapping_tables import MappingRefused, NewRow, add_mapping
from exchange import audit, dead_letters
from exchange.api.access import require, within_scope
from exchange.api.app import ApiError, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER, Timestamp
from exchange.api.tables import TABLE_RESPONSES, Table, TableFormat, answer_table
from exchange.auth.principal import Principal
from exchange.jobs import Job
from exchange.recognize import RecognitionMemo
from exchange.remap import pending, remap
from exchange.stats import in_scope

router = APIRouter(prefix="/api/v1", tags=["data quality"], responses=AUTHENTICATED)

OPERATOR = require("operator", purpose="quality")
_REMAPPING = threading.Lock()


class NewMapping(BaseModel):
    """A row of the institution's mapping table, as the unmapped queue shows the code (``issuer``,
    ``local_code``, ``local_system``) plus the unified item it means. A lab item goes into the lab table
    (codes/README.md, "mappings/…"); an exam item into the imaging table ("imaging_mappings/…"): a procedure code
    under its scheme (``local_system``), or with ``local_system`` ``dicom`` the study shape the queue shows as
    ``MODALITY/BODYPART/technique`` (``-`` where the study named none)."""

    model_config = ConfigDict(extra="forbid")

    institution: str = Field(max_length=64, description="the issuer whose table gets the row")
    local_code: str = Field(min_length=1, max_length=64)
    local_system: str | None = Field(None, max_length=256, description="as the queue shows it; a LOINC system "
                                     "becomes `LN`, none or `local` the hospital's own codes")
    qualifier: str | None = Field(None, max_length=64, description="specimen or method, when one local code "
                                  "means several items")
    local_name: str | None = Field(None, max_length=128)
    unified_code: str = Field(min_length=1, max_length=16, description="an item of items.csv")
    source_unit: str | None = Field(None, max_length=64, description="UCUM unit the hospital reports, when it "
                                    "differs from the item's (then `factor` is required)")
    factor: float | None = Field(None, description="unified = value × factor + offset")
    offset: float | None = None
    note: str | None = Field(None, max_length=200)


class JobView(BaseModel):
    model_config = ANSWER

    id: str
    kind: Literal["remap"]
    state: Literal["running", "done", "failed"]
    done: int = Field(description="units done (stored results examined), committed")
    total: int = Field(description="units to do, counted when the job started")
    errors: list[str]
    result: dict[str, int] = Field(description="when done: examined, changed (re-mapped), newly_mapped")
    started_at: Timestamp
    finished_at: Timestamp | None


class MappingAdded(BaseModel):
    model_config = ANSWER

    institution: str
    version: str = Field(description="the new mapping-table version, now in force")
    previous_version: str | None
    codes_version: str = Field(description="digest of the code data now in use")
    table: Literal["lab", "imaging"] = Field(description="which of the institution's tables got the row")
    job: JobView = Field(description="the re-map of the institution's stored results (follow GET /api/v1/jobs/{id})")


def job_view(job: Job) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "state": job.state, "done": job.done, "total": job.total,
            "errors": list(job.errors), "result": dict(job.result),
            "started_at": job.started_at.astimezone(BEIJING).isoformat(),
            "finished_at": job.finished_at.astimezone(BEIJING).isoformat() if job.finished_at else None}


@router.post("/mappings", summary="Add a mapping: a new mapping-table version, then the re-map of stored results",
             status_code=201, response_model=MappingAdded, responses=refusals(409, 422))
def add(body: NewMapping, request: Request, response: Response,
        who: Principal = Depends(OPERATOR)) -> dict[str, Any]:  # noqa: B008
    """Writes the institution's current table plus this row as its next version into the exchange's code
    directory, loads the code book again (the new version applies to what arrives from now on) and starts the
    re-map of the institution's stored results in the background. 201 once the new table is on disk; 409 for a
    code the table already maps (or the shipped demo data, which is not edited); 422 for an unknown institution
    or item, or a row the table's rules refuse: then nothing is written."""
    context = context_of(request)
    if body.institution not in context.book.institutions:
        raise ApiError("institution", f"unknown institution {body.institution!r}")
    within_scope(who, context.book, body.institution, "institution")
    row = NewRow(local_code=body.local_code, unified_code=body.unified_code, system=body.local_system,
                 qualifier=body.qualifier, local_name=body.local_name, source_unit=body.source_unit,
                 factor=body.factor, offset=body.offset, note=body.note)
    with context.codes_lock:
        try:
            added = add_mapping(context.book, body.institution, row)
        except MappingRefused as exc:
            raise ApiError(exc.field, exc.message, 409 if exc.conflict else 422) from None
        context.book = added.book
        context.recognition_memo = RecognitionMemo()  # plans were made under the previous book
    with context.database.begin() as conn:
        audit.record(conn, who.actor("quality"), "mapping.add", None, {
            "institution": body.institution, "version": added.version, "local_code": body.local_code,
            "unified_code": body.unified_code})
    book, database, institutions = added.book, context.database, [body.institution]

    def work(job: Job) -> dict[str, Any]:
        # One re-map at a time, each under the newest book: a job started under an older table must not run
        # beside a newer one and mark results with the version it knows.
        with _REMAPPING:
            newest = context.book
            job.total = pending(database, newest, institutions=institutions)
            report = remap(database, newest, institutions=institutions,
                           progress=lambda r: setattr(job, "done", r.examined))
        job.done = report.examined
        return {"examined": report.examined, "changed": report.changed, "newly_mapped": report.newly_mapped}

    job = context.jobs.start("remap", work, started_by=who.id, scope=body.institution,
                             total=pending(database, book, institutions=institutions))
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return {"institution": body.institution, "version": added.version, "previous_version": added.previous_version,
            "table": "imaging" if added.path.parent.parent.name == "imaging_mappings" else "lab",
            "codes_version": book.version, "job": job_view(job)}


@router.get("/jobs/{job_id}", summary="Progress of a background job (the re-map after a mapping change)",
            response_model=JobView, responses=refusals(404, 422))
def job_status(job_id: str, request: Request, who: Principal = Depends(OPERATOR)) -> dict[str, Any]:  # noqa: B008
    """Jobs live in the API process that started them: 404 after a restart (``hrx up`` re-maps at start)."""
    context = context_of(request)
    job = context.jobs.get(job_id)
    if job is None:
        raise ApiError("job_id", f"no job {job_id!r} in this process", 404)
    within_scope(who, context.book, job.scope, "job_id")
    return job_view(job)


class DeadLetterView(BaseModel):
    model_config = ANSWER

    id: int
    failed_at: Timestamp
    topic: str = Field(description="the topic the event was consumed from (its door: lab or imaging results)")
    partition: int
    offset: int
    reason: str = Field(description=f"one of {', '.join(dead_letters.REASONS)}, from the error")
    error: str
    institution: str | None = Field(description="the issuer the payload names, when it can be read")
    payload: str | None = Field(description="what was received, scrubbed of resident-ID-shaped text")


class DeadLetterPage(BaseModel):
    model_config = ANSWER

    letters: list[DeadLetterView] = Field(description="newest first")
    next_before: int | None = Field(description="pass as `before` for the next page; null: no more")


def _letters(request: Request, who: Principal, topic: str | None, reason: str | None, date_from: datetime | None,
             date_to: datetime | None, before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    context = context_of(request)
    book = context.book
    keep = None if who.scope in (None, "national") else (
        lambda institution: institution is not None and in_scope(book, institution, who.scope))
    with context.database.begin() as conn:
        letters, next_before = dead_letters.page(conn, topic=topic, reason=reason, start=date_from, end=date_to,
                                                 before=before, limit=limit, keep=keep)
        # A payload is what a hospital sent about a patient (resident IDs scrubbed): reading it is audited.
        audit.record(conn, who.actor("quality"), "dead_letters.read", None, {
            "letters": [letter["id"] for letter in letters], "topic": topic, "reason": reason})
    for letter in letters:
        letter["failed_at"] = letter["failed_at"].astimezone(BEIJING).isoformat()
    return letters, next_before


@router.get("/dead-letters", summary="Dead letters: what the engine could not store, with why (newest first)",
            response_model=DeadLetterPage, responses={**refusals(422), **TABLE_RESPONSES})
def list_dead_letters(request: Request,
                      topic: str | None = Query(None, max_length=128, description="the topic: `hr.results.lab.v1`, "
                                                "`hr.results.imaging.v1`"),
                      reason: dead_letters.Reason | None = Query(None),
                      date_from: AwareDatetime | None = Query(None, alias="from"),
                      date_to: AwareDatetime | None = Query(None, alias="to"),
                      before: int | None = Query(None, ge=1, description="page: letters with a smaller id"),
                      limit: int = Query(100, ge=1, le=1000), format: TableFormat | None = None,
                      who: Principal = Depends(OPERATOR)) -> Any:  # noqa: B008
    """Read from the store's ``dead_letters`` table, where the engine keeps every event it consumed and could not
    store (once per topic, partition and offset). A national operator sees all; a scoped operator the letters
    whose payload names an issuer inside the scope. Letters of the doors themselves (a CSV row, an HL7 message,
    a FHIR bundle refused at the door) are answered to the sender and published to ``hr.deadletter.v1`` only,
    not stored here. The listing is audited (payloads are patient data)."""
    letters, next_before = _letters(request, who, topic, reason, date_from, date_to, before, limit)
    table = Table("dead-letters", ["id", "failed_at", "topic", "partition", "offset", "reason", "institution",
                                   "error", "payload"], letters)
    return answer_table(request, format, table, lambda: {"letters": letters, "next_before": next_before})


class IssuerFeedback(BaseModel):
    model_config = ANSWER

    issuer: str
    issuer_name: str | None
    open: int
    acknowledged: int
    resolved: int
    oldest_unresolved_at: Timestamp | None = Field(description="the oldest report still open or acknowledged")
    oldest_unresolved_days: int | None = Field(description="its age in whole days")


class FeedbackSummary(BaseModel):
    model_config = ANSWER

    scope: str
    at: Timestamp
    issuers: list[IssuerFeedback] = Field(description="issuers with feedback, the longest unresolved first")


@router.get("/feedback-summary", summary="Feedback tickets per issuer: how many by status, and the oldest unresolved",
            response_model=FeedbackSummary, responses={**refusals(422), **TABLE_RESPONSES})
def feedback_summary(request: Request, scope: str | None = Query(None, description="the operator's own by default"),
                     format: TableFormat | None = None,  # noqa: A002
                     who: Principal = Depends(OPERATOR)) -> Any:  # noqa: B008
    """Issuers inside the scope; the reports themselves: ``GET /api/v1/feedback?issuer=`` (no patient data here,
    so no audit record)."""
    from sqlalchemy import func, select

    from exchange.stats import valid_scope
    from exchange.store.models import Feedback

    context = context_of(request)
    book = context.book
    if not valid_scope(book, scope):
        raise ApiError("scope", f"unknown scope {scope!r}")
    scope = within_scope(who, book, scope, "scope")
    now = datetime.now(BEIJING)
    unresolved = Feedback.status != "resolved"
    with context.database.connect() as conn:
        counts = conn.execute(select(Feedback.result_issuer, Feedback.status, func.count())
                              .group_by(Feedback.result_issuer, Feedback.status)).all()
        oldest = dict(conn.execute(select(Feedback.result_issuer, func.min(Feedback.created_at)).where(unresolved)
                                   .group_by(Feedback.result_issuer)).all())
    rows: dict[str, dict[str, Any]] = {}
    for issuer, status, count in counts:
        if not in_scope(book, issuer, scope):
            continue
        row = rows.setdefault(issuer, {"issuer": issuer, "issuer_name": book.institutions[issuer].name_zh
                                       if issuer in book.institutions else None, "open": 0, "acknowledged": 0,
                                       "resolved": 0, "oldest_unresolved_at": None, "oldest_unresolved_days": None})
        row[status] = count
        if issuer in oldest:
            since = oldest[issuer] if oldest[issuer].tzinfo else oldest[issuer].replace(tzinfo=UTC)
            row["oldest_unresolved_at"] = since.astimezone(BEIJING).isoformat()
            row["oldest_unresolved_days"] = (now - since).days
    ordered = sorted(rows.values(), key=lambda r: (r["oldest_unresolved_at"] is None, r["oldest_unresolved_at"] or "",
                                                   r["issuer"]))
    table = Table("feedback-summary", ["issuer", "issuer_name", "open", "acknowledged", "resolved",
                                       "oldest_unresolved_at", "oldest_unresolved_days"], ordered)
    return answer_table(request, format, table, lambda: {"scope": scope, "at": now.isoformat(), "issuers": ordered})

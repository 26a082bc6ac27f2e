"""``POST /fhir``: FHIR R4 Bundles of lab and imaging results, answered 2xx only once Kafka acknowledged them.

The body is read within a bound (``HRX_FHIR_MAX_BYTES``): refused by its Content-Length before any byte is
read, and as soon as a chunked body passes the bound. Reports that contradict the store are refused (409)
before anything is published (``exchange/conflicts.py``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from adapters.fhir import BuiltEvent, BundleRefused, Issue, build_events, operation_outcome
from adapters.report import AdapterError
from adapters.publish import BrokerUnavailable
from exchange.api.access import require
from exchange.api.app import Context, context_of
from exchange.api.fields import ANSWER
from exchange.api.request_ids import request_id
from exchange.auth.principal import Principal
from exchange.conflicts import Conflict, check_against_store

log = logging.getLogger(__name__)
router = APIRouter(tags=["adapters"])
FHIR_JSON = "application/fhir+json"


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_JSON


class OutcomeIssue(BaseModel):
    model_config = ANSWER

    severity: Literal["fatal", "error", "warning", "information"]
    code: str = Field(description="FHIR IssueType: `structure`, `invalid`, `not-found`, `too-costly`, `transient`")
    diagnostics: str
    expression: list[str] = Field(None, description="the element at fault (FHIRPath), when one is")


class OperationOutcome(BaseModel):
    """FHIR R4 OperationOutcome: why the Bundle was refused (nothing of it was accepted)."""

    model_config = ANSWER

    resourceType: Literal["OperationOutcome"]  # noqa: N815 - FHIR's element name
    issue: list[OutcomeIssue]


class EntryResponse(BaseModel):
    model_config = ANSWER

    status: Literal["201 Created", "200 OK"] = Field(description="`200 OK`: an identical resend, nothing new")
    location: str = Field(description="`DiagnosticReport/<issuer>/<result_id>/_history/<version>`")


class ResponseEntry(BaseModel):
    model_config = ANSWER

    response: EntryResponse


class TransactionResponse(BaseModel):
    """FHIR R4 Bundle of type transaction-response: one entry per DiagnosticReport, in the Bundle's order."""

    model_config = ANSWER

    resourceType: Literal["Bundle"]  # noqa: N815 - FHIR's element name
    type: Literal["transaction-response"]
    entry: list[ResponseEntry]


def _outcome(status: int, error: AdapterError) -> Response:
    return Response(orjson.dumps(operation_outcome(error)), status_code=status, media_type=FHIR_JSON)


def too_large(limit: int) -> Response:
    return _outcome(413, AdapterError(f"the Bundle is larger than {limit} bytes (HRX_FHIR_MAX_BYTES): send "
                                      "fewer reports per Bundle", "Bundle", code="too-costly"))


async def read_within(request: Request, limit: int) -> bytearray | None:
    """The request body, or None once it is known to exceed ``limit`` bytes: by its Content-Length before
    reading anything, else (chunked) after reading at most ``limit`` bytes and one more chunk."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


def conflict_outcome(conflicts: Sequence[Conflict]) -> Response:
    issues = [Issue("conflict", c.message, (f"{c.location}.identifier", f"{c.location}.meta.versionId")
                    if c.location else ("DiagnosticReport.identifier", "DiagnosticReport.meta.versionId"))
              for c in conflicts]
    return _outcome(409, BundleRefused(issues))


_BODY = {"requestBody": {"required": True, "content": {
    FHIR_JSON: {"schema": {"type": "object", "description": "FHIR R4 Bundle"}},
    "application/json": {"schema": {"type": "object", "description": "FHIR R4 Bundle"}}}}}


@router.post("/fhir", summary="Submit a FHIR R4 Bundle (transaction or collection) of lab or imaging results",
             openapi_extra=_BODY, response_class=FhirJSONResponse, response_model=None,
             responses={200: {"model": TransactionResponse,
                              "description": "transaction-response: Kafka acknowledged every result"},
                        400: {"model": OperationOutcome, "description": "not a Bundle, or not JSON"},
                        401: {"model": OperationOutcome, "description": "no token, or an unknown, expired or "
                                                                         "revoked one"},
                        403: {"model": OperationOutcome,
                              "description": "not a source client, or a report issued by another institution"},
                        409: {"model": OperationOutcome,
                              "description": "a report already stored under the same identifier and version "
                                             "with other content, or a version older than the stored one"},
                        413: {"model": OperationOutcome, "description": "larger than HRX_FHIR_MAX_BYTES"},
                        422: {"model": OperationOutcome, "description": "an element is invalid; the outcome names it"},
                        503: {"model": OperationOutcome,
                              "description": "the broker is unreachable; nothing was acknowledged"}})
async def submit_bundle(request: Request,
                        who: Principal = Depends(require("source", purpose="publish"))) -> Response:  # noqa: B008
    # The raw body is read here, within the size bound, and parsed by fhir.resources, not by FastAPI's models.
    limit = context_of(request).fhir_max_bytes
    body = await read_within(request, limit)
    if body is None:
        return too_large(limit)
    return await run_in_threadpool(handle_bundle, context_of(request), body, who.institution)


def handle_bundle(context: Context, body: bytes | bytearray, institution: str | None) -> Response:
    """Validate every report of the Bundle, check that ``institution`` (the source client's) issued every one
    of them, check them against the store, publish all of them, and answer once Kafka acknowledged."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _outcome(400, AdapterError(f"body is not JSON: {exc}", code="structure"))
    pipeline = context.pipeline()
    try:
        built: list[BuiltEvent] = build_events(pipeline, data)
    except AdapterError as exc:
        status = 422 if exc.code != "structure" else 400
        return _outcome(status, exc)
    foreign = sorted({b.event["issuer"] for b in built if b.event["issuer"] != institution})
    if foreign:
        return _outcome(403, BundleRefused([Issue(
            "forbidden", f"this client publishes for {institution} only; the Bundle holds reports issued by "
            f"{', '.join(foreign)}", ("DiagnosticReport.performer",))]))
    try:
        with context.database.connect() as conn:
            checked = check_against_store(conn, built)
    except SQLAlchemyError as exc:
        log.warning("POST /fhir refused: the store cannot be read: %s", exc)
        return _outcome(503, AdapterError("the store is unavailable; nothing was accepted, retry later",
                                          code="transient"))
    if checked.conflicts:
        return conflict_outcome(checked.conflicts)
    rid = request_id()
    for b in built:  # the request id stands for the message id of a Bundle without an identifier
        if rid and b.event["source"]["message_id"] is None:
            b.event["source"]["message_id"] = rid
    try:
        pipeline.publish([b.event for b in built])
    except BrokerUnavailable as exc:
        log.warning("POST /fhir refused: %s", exc)
        return _outcome(503, AdapterError("the message broker is unavailable; nothing was accepted, retry later",
                                          code="transient"))
    log.info("POST /fhir: %d report(s) of %s acknowledged by the broker", len(built), institution,
             extra={"door": "fhir", "message_id": built[0].event["source"]["message_id"] if built else None})
    entries = []
    for b in built:
        e = b.event
        key = (e["issuer"], e["result_id"], e["version"])
        entries.append({"response": {
            "status": "200 OK" if key in checked.resent else "201 Created",
            "location": f"DiagnosticReport/{e['issuer']}/{quote(e['result_id'], safe='')}/_history/{e['version']}"}})
    return FhirJSONResponse({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})

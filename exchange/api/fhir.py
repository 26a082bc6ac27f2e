"""``POST /fhir``: FHIR R4 Bundles of lab results, answered 2xx only once Kafka acknowledged them."""
from __future__ import annotations

import logging
from typing import Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from adapters.fhir import bundle_events, operation_outcome
from adapters.pipeline import AdapterError
from adapters.publish import BrokerUnavailable
from exchange.api.app import Context, context_of
from exchange.api.fields import ANSWER

log = logging.getLogger(__name__)
router = APIRouter(tags=["adapters"])
FHIR_JSON = "application/fhir+json"
MAX_BUNDLE_BYTES = 20 * 1024 * 1024


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_JSON


class Issue(BaseModel):
    model_config = ANSWER

    severity: Literal["fatal", "error", "warning", "information"]
    code: str = Field(description="FHIR IssueType: `structure`, `invalid`, `not-found`, `too-costly`, `transient`")
    diagnostics: str
    expression: list[str] = Field(None, description="the element at fault (FHIRPath), when one is")


class OperationOutcome(BaseModel):
    """FHIR R4 OperationOutcome: why the Bundle was refused (nothing of it was accepted)."""

    model_config = ANSWER

    resourceType: Literal["OperationOutcome"]  # noqa: N815 - FHIR's element name
    issue: list[Issue]


class EntryResponse(BaseModel):
    model_config = ANSWER

    status: Literal["201 Created"]
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


_BODY = {"requestBody": {"required": True, "content": {
    FHIR_JSON: {"schema": {"type": "object", "description": "FHIR R4 Bundle"}},
    "application/json": {"schema": {"type": "object", "description": "FHIR R4 Bundle"}}}}}


@router.post("/fhir", summary="Submit a FHIR R4 Bundle (transaction or collection) of lab results",
             openapi_extra=_BODY, response_class=FhirJSONResponse, response_model=None,
             responses={200: {"model": TransactionResponse,
                              "description": "transaction-response: Kafka acknowledged every result"},
                        400: {"model": OperationOutcome, "description": "not a Bundle, or not JSON"},
                        413: {"model": OperationOutcome, "description": f"larger than {MAX_BUNDLE_BYTES} bytes"},
                        422: {"model": OperationOutcome, "description": "an element is invalid; the outcome names it"},
                        503: {"model": OperationOutcome,
                              "description": "the broker is unreachable; nothing was acknowledged"}})
async def submit_bundle(request: Request) -> Response:
    # The raw body is read here and parsed by fhir.resources, not by FastAPI's JSON models.
    body = await request.body()
    return await run_in_threadpool(handle_bundle, context_of(request), body)


def handle_bundle(context: Context, body: bytes) -> Response:
    """Validate every report of the Bundle, publish all of them, and answer once Kafka acknowledged."""
    if len(body) > MAX_BUNDLE_BYTES:
        return _outcome(413, AdapterError(f"Bundle larger than {MAX_BUNDLE_BYTES} bytes", code="too-costly"))
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _outcome(400, AdapterError(f"body is not JSON: {exc}", code="structure"))
    pipeline = context.pipeline()
    try:
        built = bundle_events(pipeline, data)
    except AdapterError as exc:
        status = 422 if exc.code != "structure" else 400
        return _outcome(status, exc)
    try:
        pipeline.publish(built)
    except BrokerUnavailable as exc:
        log.warning("POST /fhir refused: %s", exc)
        return _outcome(503, AdapterError("the message broker is unavailable; nothing was accepted, retry later",
                                          code="transient"))
    entries = [{"response": {"status": "201 Created",
                             "location": f"DiagnosticReport/{e['issuer']}/{e['result_id']}/_history/{e['version']}"}}
               for e in built]
    return FhirJSONResponse({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})

"""``POST /fhir``: FHIR R4 Bundles of lab results, answered 2xx only once Kafka acknowledged them."""
from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from adapters.fhir import bundle_events, operation_outcome
from adapters.pipeline import AdapterError
from exchange.api.app import Context, context_of
from adapters.publish import BrokerUnavailable

log = logging.getLogger(__name__)
router = APIRouter(tags=["adapters"])
FHIR_JSON = "application/fhir+json"
MAX_BUNDLE_BYTES = 20 * 1024 * 1024


def _outcome(status: int, error: AdapterError) -> Response:
    return Response(orjson.dumps(operation_outcome(error)), status_code=status, media_type=FHIR_JSON)


_BODY = {"requestBody": {"required": True, "content": {
    FHIR_JSON: {"schema": {"type": "object", "description": "FHIR R4 Bundle"}},
    "application/json": {"schema": {"type": "object", "description": "FHIR R4 Bundle"}}}}}


@router.post("/fhir", summary="Submit a FHIR R4 Bundle (transaction or collection) of lab results",
             openapi_extra=_BODY,
             responses={200: {"description": "transaction-response: Kafka acknowledged every result"},
                        400: {"description": "OperationOutcome: not a Bundle or not JSON"},
                        422: {"description": "OperationOutcome naming the element at fault"},
                        503: {"description": "the broker is unreachable; nothing was acknowledged"}})
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
    return JSONResponse({"resourceType": "Bundle", "type": "transaction-response", "entry": entries},
                        media_type=FHIR_JSON)

"""``POST /fhir/$recognition-check``: the recognition check as a FHIR operation, Parameters in and Parameters out,
mirroring ``POST /api/v1/recognition/check`` — the same request is checked, authorised, evaluated, recorded
(presentations) and audited by that route's own code; only the envelope differs.

In: ``patient`` (valueReference ``Patient/<id>``, or valueIdentifier ``urn:oid:2.16.156.10011.1.3|<resident
ID>``), ``requester`` (valueReference ``Organization/<id>`` or valueIdentifier ``urn:hrx:institution|<id>``),
``item`` (valueCoding ``urn:hrx:item``, 0..*: present, an order-time check), ``at`` (valueDateTime),
``encounter`` and ``clinician`` (valueString). Out: ``checkId``, ``trigger``, ``at``, ``complete``, and one
``result`` (encounter) or ``order`` (per ordered item: ``recognizable``, ``best``, ``other``) part per entry,
each naming the report, its issuer, the item and the recognition (status, tier, catalogue, catalogueVersion,
validUntil, reason with zh and en).
"""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fhir.resources.R4B.parameters import Parameters
from pydantic import ValidationError
from sqlalchemy import func, select, tuple_
from starlette.concurrency import run_in_threadpool

from adapters.fhir.identity import INSTITUTION_SYSTEM, RESIDENT_ID_SYSTEMS
from exchange.api.access import require
from exchange.api.app import context_of
from exchange.api.fhir import FHIR_JSON, FhirJSONResponse, read_within, too_large
from exchange.api.fhir_search import FhirResource, _OUTCOMES, _send, outcome
from exchange.api.recognition import CheckRequest, check
from exchange.auth.principal import Principal
from exchange.fhir.resources import ITEM_SYSTEM, organization_reference
from exchange.store.models import Result

router = APIRouter(prefix="/fhir", tags=["fhir"])


class _Refused(Exception):
    def __init__(self, message: str, expression: str) -> None:
        super().__init__(message)
        self.message, self.expression = message, expression


def _value(parameter: dict[str, Any], *kinds: str) -> tuple[str, Any]:
    for kind in kinds:
        if f"value{kind}" in parameter:
            return kind, parameter[f"value{kind}"]
    raise _Refused(f"{parameter.get('name')}: give value{' or value'.join(kinds)}", parameter.get("name", ""))


def check_request(parameters: dict[str, Any]) -> CheckRequest:
    """The JSON check's request from the operation's Parameters (400 naming the parameter at fault)."""
    body: dict[str, Any] = {}
    items: list[str] | None = None
    for parameter in parameters.get("parameter") or ():
        name = parameter.get("name")
        if name == "patient":
            kind, value = _value(parameter, "Reference", "Identifier")
            if kind == "Reference":
                reference = (value.get("reference") or "")
                if not reference.startswith("Patient/"):
                    raise _Refused("patient: a reference Patient/<id> is expected", "patient")
                body["patient"] = {"pseudonym": reference.removeprefix("Patient/")}
            elif value.get("system") in RESIDENT_ID_SYSTEMS:
                body["patient"] = {"resident_id": value.get("value")}
            else:
                raise _Refused(f"patient: the identifier's system must be one of {', '.join(RESIDENT_ID_SYSTEMS)}",
                               "patient")
        elif name == "requester":
            kind, value = _value(parameter, "Reference", "Identifier")
            if kind == "Reference":
                body["requesting_institution"] = (value.get("reference") or "").removeprefix("Organization/")
            elif value.get("system") == INSTITUTION_SYSTEM:
                body["requesting_institution"] = value.get("value")
            else:
                raise _Refused(f"requester: the identifier's system must be {INSTITUTION_SYSTEM}", "requester")
        elif name == "item":
            _, coding = _value(parameter, "Coding")
            if coding.get("system") not in (None, ITEM_SYSTEM):
                raise _Refused(f"item: the coding's system must be {ITEM_SYSTEM}", "item")
            items = [*(items or []), coding.get("code")]
        elif name == "at":
            body["at"] = _value(parameter, "DateTime", "Instant")[1]
        elif name == "encounter":
            body["encounter_id"] = _value(parameter, "String")[1]
        elif name == "clinician":
            body["clinician_id"] = _value(parameter, "String")[1]
        else:
            raise _Refused(f"unknown parameter {name!r} (known: patient, requester, item, at, encounter, clinician)",
                           str(name))
    if items is not None:
        body["items"] = items
    try:
        return CheckRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _Refused(f"{where}: {first['msg']}", where.split(".")[0]) from None


def _recognition(recognition: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"name": "status", "valueCode": recognition["status"]}]
    for name, key, kind in (("tier", "tier", "Code"), ("catalogue", "catalogue_id", "String"),
                            ("catalogueVersion", "catalogue_version", "String"),
                            ("validUntil", "valid_until", "DateTime")):
        if recognition.get(key) is not None:
            parts.append({"name": name, f"value{kind}": recognition[key]})
    for reason in recognition["reasons"]:
        parts.append({"name": "reason", "part": [{"name": "zh", "valueString": reason["zh"]},
                                                 {"name": "en", "valueString": reason["en"]}]})
    return parts


def _entry(book: Any, entry: dict[str, Any], ids: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    result, item = entry["result"], entry["item"]
    report: dict[str, Any] = {"display": result["ref"]}
    found = ids.get((result["issuer"], result["result_id"]))
    if found is not None:
        report["reference"] = f"DiagnosticReport/{found}"
    parts: list[dict[str, Any]] = [
        {"name": "report", "valueReference": report},
        {"name": "issuer", "valueReference": organization_reference(book, result["issuer"])},
        {"name": "version", "valueInteger": result["version"]},
        {"name": "reported", "valueDateTime": result["reported_at"]}]
    if item["code"] is not None:
        coding = {"system": ITEM_SYSTEM, "code": item["code"]}
        if item["name_zh"]:
            coding["display"] = item["name_zh"]
        parts.append({"name": "item", "valueCoding": coding})
    parts.append({"name": "recognition", "part": _recognition(entry["recognition"])})
    return parts


def parameters_of(context: Any, answer: dict[str, Any]) -> dict[str, Any]:
    """The JSON check's answer as the operation's Parameters."""
    book = context.book
    entries = answer["results"] if answer["trigger"] == "encounter" else [
        e for ordered in answer["results"] for e in ([ordered["best"]] if ordered["best"] else []) + ordered["others"]]
    keys = {(e["result"]["issuer"], e["result"]["result_id"]) for e in entries}
    ids: dict[tuple[str, str], int] = {}
    if keys:  # the FHIR ids of the reports named (their first versions' row ids)
        with context.database.connect() as conn:
            ids = {(issuer, result_id): pk for issuer, result_id, pk in conn.execute(
                select(Result.issuer, Result.result_id, func.min(Result.id))
                .where(tuple_(Result.issuer, Result.result_id).in_(sorted(keys)))
                .group_by(Result.issuer, Result.result_id))}
    out: list[dict[str, Any]] = [
        {"name": "checkId", "valueString": answer["check_id"]}, {"name": "trigger", "valueCode": answer["trigger"]},
        {"name": "at", "valueDateTime": answer["at"]},
        {"name": "patient", "valueReference": {"reference": f"Patient/{answer['patient']['pseudonym']}"}},
        {"name": "complete", "valueBoolean": answer["complete"]}]
    if answer["trigger"] == "encounter":
        out += [{"name": "result", "part": _entry(book, e, ids)} for e in answer["results"]]
    else:
        for ordered in answer["results"]:
            parts: list[dict[str, Any]] = [{"name": "item", "valueCoding": {"system": ITEM_SYSTEM,
                                                                            "code": ordered["item"]}},
                                           {"name": "recognizable", "valueBoolean": ordered["recognizable"]}]
            if ordered["best"]:
                parts.append({"name": "best", "part": _entry(book, ordered["best"], ids)})
            parts += [{"name": "other", "part": _entry(book, e, ids)} for e in ordered["others"]]
            out.append({"name": "order", "part": parts})
    return {"resourceType": "Parameters", "parameter": out}


_BODY = {"requestBody": {"required": True, "content": {
    FHIR_JSON: {"schema": {"type": "object", "description": "FHIR R4 Parameters"}},
    "application/json": {"schema": {"type": "object", "description": "FHIR R4 Parameters"}}}}}


@router.post("/$recognition-check", summary="The recognition check as a FHIR operation (Parameters in and out)",
             openapi_extra=_BODY, response_class=FhirJSONResponse, response_model=None,
             responses={200: {"model": FhirResource, "description": "Parameters: the check's answer"},
                        **{s: _OUTCOMES[s] for s in (400, 401, 403)},
                        413: _OUTCOMES[400] | {"description": "larger than HRX_FHIR_MAX_BYTES"},
                        422: _OUTCOMES[400] | {"description": "refused as the JSON check refuses it (unknown "
                                                              "institution or item, invalid resident ID)"}})
async def recognition_check(request: Request, who: Principal = Depends(  # noqa: B008
        require("clinician", "his", purpose="order_check"))) -> Response:
    limit = context_of(request).fhir_max_bytes
    raw = await read_within(request, limit)
    if raw is None:
        return too_large(limit)
    return await run_in_threadpool(_operate, request, raw, who)


def _operate(request: Request, raw: bytes | bytearray, who: Principal) -> Response:
    try:
        parameters = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return outcome(400, "structure", f"the body is not JSON: {exc}")
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        return outcome(400, "structure", "the body must be a Parameters resource")
    try:
        Parameters.model_validate(parameters)
    except (ValidationError, ValueError, TypeError) as exc:
        return outcome(400, "structure", f"not a valid Parameters resource: {str(exc).splitlines()[0]}")
    try:
        body = check_request(parameters)
    except _Refused as exc:
        return outcome(400, "invalid", exc.message, exc.expression)
    answered = check(body, request, who)  # the JSON check itself: access, evaluation, presentations, audit
    return _send(parameters_of(context_of(request), orjson.loads(answered.body)), Parameters)

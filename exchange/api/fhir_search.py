"""The FHIR R4 read/search server under ``/fhir`` (issue 19): ``metadata``, Patient by resident ID,
DiagnosticReport / Observation / ImagingStudy search, read and vread, ``Observation/$lastn``, the issuer
Organization and the recognition extension's StructureDefinition. HAPI FHIR's behaviour is the reference.

Every read of results is authenticated, authorised and audited as ``GET /api/v1/patients/{pseudonym}/results``
is: a clinician or HIS (for a named clinician), within a treatment relationship (else 403), results the patient
blocked left out (break-glass excepted), and one audit record per request in the read's transaction. Every
answer is validated with the ``fhir.resources`` R4B models before it is sent.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.observation import Observation as FhirObservation
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.structuredefinition import StructureDefinition
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection

from adapters.fhir.identity import RESIDENT_ID_SYSTEMS
from codes.calendar import BEIJING, beijing_iso
from exchange import audit
from exchange.api.access import ANY_ROLE, PUBLIC, patient_read, require, withhold_blocked
from exchange.api.app import Context, context_of
from exchange.api.fhir import FHIR_JSON, FhirJSONResponse, OperationOutcome
from exchange.auth.principal import Principal
from exchange.fhir import resources as build
from exchange.fhir.capability import capability_statement
from exchange.fhir.params import SearchError
from exchange.fhir.search import (SEARCHES, Page, Scope, cursor_token, lastn, parse, report_items, result_of,
                                  search, versions_of)
from exchange.recognize import Recognizer, items_of
from exchange.store import StoredObservation, StoredResult, current_results
from exchange.store.results import with_observations
from schemas.resident_id import InvalidResidentId

router = APIRouter(prefix="/fhir", tags=["fhir"])
_READER = require("clinician", "his", purpose="treatment")
MODELS: dict[str, Any] = {"DiagnosticReport": DiagnosticReport, "Observation": FhirObservation,
                          "ImagingStudy": ImagingStudy, "Organization": Organization}


class FhirResource(BaseModel):
    """A FHIR R4 resource (validated with the fhir.resources R4B models before it is sent)."""

    model_config = ConfigDict(extra="allow")
    resourceType: str  # noqa: N815 - FHIR's element name


_OUTCOMES = {status: {"model": OperationOutcome, "description": meaning} for status, meaning in (
    (400, "a parameter's value is invalid, a parameter is unknown under Prefer: handling=strict, or no patient"),
    (401, "no token, or an unknown, expired or revoked one"),
    (403, "no treatment relationship with the patient, or a role that may not read results"),
    (404, "no such resource (or one the patient's sharing blocks withhold)"),
    (422, "never for a malformed id (404); declared so that no other shape is"))}


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The answers of a FHIR route: the resource, and OperationOutcomes (422 too, for routes with path
    parameters: FastAPI would otherwise declare its own validation shape, which these routes never answer)."""
    return {200: {"model": FhirResource, "description": "the resource, or a searchset Bundle"},
            **{s: _OUTCOMES[s] for s in statuses}}


def outcome(status: int, code: str, message: str, expression: str | None = None) -> Response:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": message}
    if expression:
        issue["expression"] = [expression]
    return Response(orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]}), status_code=status,
                    media_type=FHIR_JSON)


def _refused(exc: SearchError) -> Response:
    return outcome(exc.status, exc.code, exc.message, exc.expression)


def _send(resource: dict[str, Any], model: Any, headers: dict[str, str] | None = None, *,
          validate: bool = True) -> Response:
    """Validate with the R4B model (unless HRX_FHIR_VALIDATE=0), then send the very dict that was validated."""
    if validate:
        model.model_validate(resource)
    return Response(orjson.dumps(resource), media_type=FHIR_JSON, headers=headers)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _strict(request: Request) -> bool:
    """``Prefer: handling=strict`` (FHIR R4 §3.1.1.3.2): unknown parameters are refused instead of ignored."""
    prefer = request.headers.get("prefer", "")
    return any(part.strip().replace(" ", "") == "handling=strict" for part in prefer.split(";") + prefer.split(","))


# -- public: what the server is ----------------------------------------------------------------------------------

@router.get("/metadata", summary="CapabilityStatement: exactly what this FHIR server supports",
            response_class=FhirJSONResponse, response_model=None, responses=_responses())
def metadata(request: Request, _: None = Depends(PUBLIC)) -> Response:  # noqa: B008
    statement = capability_statement(context_of(request).book.version, beijing_iso(_STARTED))
    statement["implementation"]["url"] = _base(request)
    return _send(statement, CapabilityStatement)


_STARTED = datetime.now(BEIJING)


@router.get("/StructureDefinition/{definition_id}", summary="The StructureDefinitions the project publishes "
            "(hrx-recognition: the recognition extension)", response_class=FhirJSONResponse, response_model=None,
            responses=_responses(404, 422))
def structure_definition(definition_id: str, _: None = Depends(PUBLIC)) -> Response:  # noqa: B008
    if definition_id != build.RECOGNITION_ID:
        return outcome(404, "not-found", f"no StructureDefinition {definition_id!r}")
    return _send(build.structure_definition(), StructureDefinition)


@router.get("/Organization/{institution}", summary="An issuing or requesting institution",
            response_class=FhirJSONResponse, response_model=None, responses=_responses(401, 403, 404, 422))
def read_organization(request: Request, institution: str,
                      who: Principal = Depends(require(*ANY_ROLE))) -> Response:  # noqa: B008
    found = build.organization(context_of(request).book, institution)
    if found is None:
        return outcome(404, "not-found", f"no Organization {institution!r}")
    return _send(found, Organization)


# -- Patient: the pseudonym of a resident ID ------------------------------------------------------------------

@router.get("/Patient", summary="Patient?identifier=urn:oid:2.16.156.10011.1.3|<resident ID> → the patient's "
            "pseudonymous id", response_class=FhirJSONResponse, response_model=None,
            responses=_responses(400, 401, 403))
def search_patient(request: Request, who: Principal = Depends(_READER)) -> Response:  # noqa: B008
    context = context_of(request)
    identifiers, unknown = [], []
    for name, raw in request.query_params.multi_items():
        if name == "identifier":
            identifiers.append(raw)
        elif name not in ("_format", "_pretty"):
            unknown.append(name)
    if unknown and _strict(request):
        return outcome(400, "not-supported", f"unknown search parameters: {', '.join(unknown)}", unknown[0])
    if len(identifiers) != 1 or "|" not in identifiers[0]:
        return outcome(400, "required", "give one identifier=urn:oid:2.16.156.10011.1.3|<resident ID>", "identifier")
    system, value = identifiers[0].split("|", 1)
    if system not in RESIDENT_ID_SYSTEMS:
        return outcome(400, "not-supported", f"identifier: the system must be one of {', '.join(RESIDENT_ID_SYSTEMS)}",
                       "identifier")
    try:
        pseudonym = context.pseudonymizer.pseudonym(value)
    except InvalidResidentId as exc:  # the message names no digits of the number
        return outcome(400, "invalid", f"identifier: {exc}", "identifier")
    with context.database.begin() as conn:
        audit.record(conn, who.actor("treatment"), "fhir.patient.resolve", pseudonym, {})
    base = _base(request)
    bundle = _bundle(f"{base}/Patient?identifier={system}%7C***", None, 1,
                     [_entry(base, build.patient(pseudonym), "match")], unknown)
    return _send(bundle, Bundle)


@router.get("/Patient/{pseudonym}", summary="A Patient by its pseudonymous id (within a treatment relationship)",
            response_class=FhirJSONResponse, response_model=None, responses=_responses(401, 403, 404, 422))
def read_patient(request: Request, pseudonym: str, who: Principal = Depends(_READER)) -> Response:  # noqa: B008
    """The subject every result refers to; only its pseudonym is known (the resident ID is never stored)."""
    if len(pseudonym) != 64 or any(c not in "0123456789abcdef" for c in pseudonym):
        return outcome(404, "not-found", f"no Patient/{pseudonym}")
    with context_of(request).database.begin() as conn:
        access = patient_read(conn, who, pseudonym)
        audit.record(conn, _actor(who, access), "fhir.read", pseudonym, {"resource": f"Patient/{pseudonym}"})
    return _send(build.patient(pseudonym), FhirPatient)


# -- shared by the result routes ------------------------------------------------------------------------------

class _Recognitions:
    """The recognition extensions of results for the caller's institution, now."""

    def __init__(self, context: Context, who: Principal) -> None:
        self.book = context.book
        self.requester = who.institution
        self.at = datetime.now(BEIJING)
        known = self.requester is not None and self.requester in self.book.institutions
        self._answer = Recognizer(self.book, self.requester, self.at, context.recognition_memo).answer \
            if known else None

    def item(self, issuer: str, code: str | None, status: str, reported_at: datetime,
             present: frozenset[str]) -> list[dict[str, Any]]:
        if self._answer is None:
            return []
        answer = self._answer(issuer, code, status, reported_at, present)
        return [build.recognition(self.book, answer, self.requester, self.at)]  # type: ignore[arg-type]

    def result(self, result: StoredResult) -> list[dict[str, Any]]:
        return [ext for code, present in items_of(result)
                for ext in self.item(result.issuer, code, result.status, result.reported_at, present)]


def _blocked(conn: Connection, context: Context, who: Principal, pseudonym: str, access: Any) -> set[tuple[str, str]]:
    """The results the patient's sharing blocks withhold from ``who``: judged by the JSON API's own rule
    (``withhold_blocked``) over the patient's results, then left out of the search in SQL."""
    if access.break_glass or not access.blocks:
        return set()
    every = current_results(conn, pseudonym)
    shown, _ = withhold_blocked(conn, context.book, every, pseudonym, who, access)
    visible = {(r.issuer, r.result_id) for r in shown}
    return {(r.issuer, r.result_id) for r in every} - visible


def _actor(who: Principal, access: Any) -> audit.Actor:
    return who.actor("emergency" if access.break_glass else "treatment", break_glass=access.break_glass)


def _entry(base: str, resource: dict[str, Any], mode: str) -> dict[str, Any]:
    return {"fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}", "resource": resource,
            "search": {"mode": mode}}


def _bundle(self_url: str, next_url: str | None, total: int | None, entries: list[dict[str, Any]],
            unknown: list[str]) -> dict[str, Any]:
    if unknown:  # reported, as HAPI does under lenient handling: one OperationOutcome entry, search mode outcome
        entries = entries + [{"resource": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "warning", "code": "not-supported",
             "diagnostics": f"unknown search parameter {name!r}: ignored", "expression": [name]}
            for name in unknown]}, "search": {"mode": "outcome"}}]
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                              "meta": {"lastUpdated": beijing_iso(datetime.now(BEIJING))}, "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle


def _stored(row: Any, observations: tuple[StoredObservation, ...] = ()) -> StoredResult:
    return StoredResult(pk=row.id, issuer=row.issuer, result_id=row.result_id, version=row.version, kind=row.kind,
                        status=row.status, patient=row.patient, unified_code=row.unified_code,
                        local_code=row.local_code, collected_at=row.collected_at, reported_at=row.reported_at,
                        event_json=row.event, observations=observations)


def _value(row: Any) -> StoredObservation:
    return StoredObservation(*(getattr(row, f"o_{name}") for name in StoredObservation._fields))


# -- search -------------------------------------------------------------------------------------------------

def _run(request: Request, who: Principal, resource: str, *, operation: str | None = None) -> Response:
    context = context_of(request)
    try:
        scope = Scope(context.book, context.database.dialect.name)
        parsed = parse(SEARCHES[resource], request.query_params.multi_items(), _strict(request), scope,
                       lastn=operation == "lastn")
        most = 1
        if operation == "lastn":
            given = [raw for name, raw in parsed.used if name == "max"]
            if given and (not given[-1].isdigit() or int(given[-1]) < 1):
                raise SearchError(f"max: {given[-1]!r} is not a positive integer", "max")
            most = int(given[-1]) if given else 1
        recognitions = _Recognitions(context, who)
        base = _base(request)
        with context.database.begin() as conn:
            access = patient_read(conn, who, parsed.patient)
            blocked = _blocked(conn, context, who, parsed.patient, access)
            if operation == "lastn":
                rows = lastn(conn, context.book, parsed, most, blocked)
                page = Page(rows, len(rows), None)
            else:
                page = search(conn, context.book, parsed, blocked)
            entries = _entries(conn, context, recognitions, base, resource, parsed.includes, page)
            audit.record(conn, _actor(who, access), f"fhir.{operation or 'search'}.{resource}", parsed.patient, {
                "params": parsed.used, "ignored": parsed.unknown, "matches": len(page.rows), "total": page.total,
                "included": sum(1 for e in entries if e["search"]["mode"] == "include")})
    except SearchError as exc:
        return _refused(exc)
    path = f"{base}/{resource}" + (f"/${operation}" if operation else "")
    query = urlencode(parsed.used)
    page_token = request.query_params.get("_page")
    self_url = f"{path}?{query}" + (f"&_page={page_token}" if page_token else "")
    next_url = f"{path}?{query}&_page={cursor_token(page.next)}" if page.next else None
    return _send(_bundle(self_url, next_url, page.total, entries, parsed.unknown), Bundle,
                 validate=context.fhir_validate)


def _entries(conn: Connection, context: Context, recognitions: _Recognitions, base: str, resource: str,
             includes: tuple[str, ...], page: Page) -> list[dict[str, Any]]:
    book = context.book
    entries: list[dict[str, Any]] = []
    if resource == "Observation":
        present = report_items(conn, sorted({row.id for row in page.rows}))
        for row in page.rows:
            value = _value(row)
            result = _stored(row)
            extensions = recognitions.item(row.issuer, value.unified_code, row.status, row.reported_at,
                                           present[row.id]) if value.unified_code else []
            entries.append(_entry(base, build.observation(book, result, row.fhir_id, value, extensions), "match"))
        return entries
    results = with_observations(conn, page.rows)
    included: list[dict[str, Any]] = []
    issuers: dict[str, None] = {}
    for row, result in zip(page.rows, results):
        if resource == "ImagingStudy":
            study = build.imaging_study(book, result, row.fhir_id, recognitions.result(result))
            if study is not None:
                entries.append(_entry(base, study, "match"))
            continue
        entries.append(_entry(base, build.diagnostic_report(book, result, row.fhir_id, recognitions.result(result)),
                              "match"))
        issuers[result.issuer] = None
        if "DiagnosticReport:result" in includes:
            present = frozenset(o.unified_code for o in result.observations if o.unified_code)
            for value in result.observations:
                extensions = recognitions.item(result.issuer, value.unified_code, result.status,
                                               result.reported_at, present) if value.unified_code else []
                included.append(_entry(base, build.observation(book, result, row.fhir_id, value, extensions),
                                       "include"))
    if "DiagnosticReport:performer" in includes:
        included += [_entry(base, org, "include") for org in (build.organization(book, i) for i in issuers) if org]
    return entries + included


_SEARCH_DOC = ("One patient's {0} (patient=Patient/<id> is required); the parameters of GET /fhir/metadata. "
               "Unknown parameters are ignored and reported (search mode outcome), or refused under "
               "Prefer: handling=strict")


@router.get("/DiagnosticReport", summary="Search DiagnosticReports", description=_SEARCH_DOC.format("reports"),
            response_class=FhirJSONResponse, response_model=None, responses=_responses(400, 401, 403))
def search_reports(request: Request, who: Principal = Depends(_READER)) -> Response:  # noqa: B008
    return _run(request, who, "DiagnosticReport")


@router.get("/Observation", summary="Search Observations", description=_SEARCH_DOC.format("values"),
            response_class=FhirJSONResponse, response_model=None, responses=_responses(400, 401, 403))
def search_observations(request: Request, who: Principal = Depends(_READER)) -> Response:  # noqa: B008
    return _run(request, who, "Observation")


@router.get("/Observation/$lastn", summary="The latest values per code (max, default 1)",
            description=_SEARCH_DOC.format("values, the `max` latest per code"),
            response_class=FhirJSONResponse, response_model=None, responses=_responses(400, 401, 403))
def observation_lastn(request: Request, who: Principal = Depends(_READER)) -> Response:  # noqa: B008
    return _run(request, who, "Observation", operation="lastn")


@router.get("/ImagingStudy", summary="Search ImagingStudies", description=_SEARCH_DOC.format("imaging studies"),
            response_class=FhirJSONResponse, response_model=None, responses=_responses(400, 401, 403))
def search_studies(request: Request, who: Principal = Depends(_READER)) -> Response:  # noqa: B008
    return _run(request, who, "ImagingStudy")


# -- read and vread ---------------------------------------------------------------------------------------------

def _read(request: Request, who: Principal, resource: str, resource_id: str, version: int | None) -> Response:
    """One resource of one result (its head, or ``version``): 404 if unknown, 403 without a relationship."""
    context = context_of(request)
    report_id, _, seq = resource_id.partition("-") if resource == "Observation" else (resource_id, "", "")
    what = f"{resource}/{resource_id}" + (f"/_history/{version}" if version is not None else "")
    recognitions = _Recognitions(context, who)
    with context.database.begin() as conn:
        row = result_of(conn, report_id, version)
        if row is None:
            return outcome(404, "not-found", f"no {what}")
        access = patient_read(conn, who, row.patient)
        [result] = with_observations(conn, [row])
        shown, _ = withhold_blocked(conn, context.book, [result], row.patient, who, access)
        found = _resource(context, recognitions, resource, result, row.fhir_id, seq) if shown else None
        audit.record(conn, _actor(who, access), "fhir.read", row.patient, {
            "resource": what, "found": found is not None, "withheld": not shown})
    if found is None:
        return outcome(404, "not-found", f"no {what}")
    location = f"{_base(request)}/{resource}/{resource_id}/_history/{result.version}"
    return _send(found, MODELS[resource], {"ETag": f'W/"{result.version}"', "Content-Location": location},
                 validate=context.fhir_validate)


def _resource(context: Context, recognitions: _Recognitions, resource: str, result: StoredResult, fhir_id: int,
              seq: str) -> dict[str, Any] | None:
    book = context.book
    if resource == "DiagnosticReport":
        return build.diagnostic_report(book, result, fhir_id, recognitions.result(result))
    if resource == "ImagingStudy":
        return build.imaging_study(book, result, fhir_id, recognitions.result(result)) \
            if result.kind == "imaging" else None
    value = next((o for o in result.observations if seq.isdigit() and o.seq == int(seq)), None)
    if value is None:
        return None
    present = frozenset(o.unified_code for o in result.observations if o.unified_code)
    extensions = recognitions.item(result.issuer, value.unified_code, result.status, result.reported_at,
                                   present) if value.unified_code else []
    return build.observation(book, result, fhir_id, value, extensions)


@router.get("/DiagnosticReport/{resource_id}/_history", summary="Every version of a DiagnosticReport, newest first",
            response_class=FhirJSONResponse, response_model=None, responses=_responses(401, 403, 404, 422))
def report_history(request: Request, resource_id: str, who: Principal = Depends(_READER)) -> Response:  # noqa: B008
    """The instance history (FHIR R4 §3.1.0.10): a ``history`` Bundle of every version the issuer sent."""
    context = context_of(request)
    recognitions = _Recognitions(context, who)
    base = _base(request)
    with context.database.begin() as conn:
        rows = versions_of(conn, resource_id)
        if not rows:
            return outcome(404, "not-found", f"no DiagnosticReport/{resource_id}")
        patient = rows[0].patient
        access = patient_read(conn, who, patient)
        results = with_observations(conn, rows)
        shown, _ = withhold_blocked(conn, context.book, results[:1], patient, who, access)
        if shown:
            audit.record(conn, _actor(who, access), "fhir.history", patient, {
                "resource": f"DiagnosticReport/{resource_id}", "versions": len(results)})
    if not shown:
        return outcome(404, "not-found", f"no DiagnosticReport/{resource_id}")
    entries = [{"fullUrl": f"{base}/DiagnosticReport/{resource_id}/_history/{r.version}",
                "resource": build.diagnostic_report(context.book, r, rows[0].fhir_id, recognitions.result(r)),
                "request": {"method": "PUT", "url": f"DiagnosticReport/{resource_id}"},
                "response": {"status": "200 OK", "etag": f'W/"{r.version}"'}} for r in results]
    bundle = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"lastUpdated": beijing_iso(
        datetime.now(BEIJING))}, "type": "history", "total": len(entries),
        "link": [{"relation": "self", "url": f"{base}/DiagnosticReport/{resource_id}/_history"}], "entry": entries}
    return _send(bundle, Bundle, validate=context.fhir_validate)


# Ids and versions are checked by the handler: one that cannot exist is a 404 OperationOutcome, as in HAPI.
_ID = Path(description="the result's id")
_OBSERVATION_ID = Path(description="<report id>-<seq>")
_VERSION = Path(description="meta.versionId")


def _reader(resource: str, id_path: Any) -> tuple[Callable[..., Response], Callable[..., Response]]:
    def read(request: Request, resource_id: str = id_path,
             who: Principal = Depends(_READER)) -> Response:  # noqa: B008
        return _read(request, who, resource, resource_id, None)

    def vread(request: Request, resource_id: str = id_path, version: str = _VERSION,
              who: Principal = Depends(_READER)) -> Response:  # noqa: B008
        if not version.isdigit() or not 1 <= int(version) <= 2**31 - 1:
            return outcome(404, "not-found", f"no {resource}/{resource_id}/_history/{version}")
        return _read(request, who, resource, resource_id, int(version))

    return read, vread


for _resource_type, _path in (("DiagnosticReport", _ID), ("Observation", _OBSERVATION_ID), ("ImagingStudy", _ID)):
    _read_route, _vread_route = _reader(_resource_type, _path)
    router.add_api_route(f"/{_resource_type}/{{resource_id}}", _read_route, methods=["GET"],
                         summary=f"Read a {_resource_type} (its current version)", response_class=FhirJSONResponse,
                         response_model=None, responses=_responses(401, 403, 404, 422),
                         name=f"read_{_resource_type}")
    router.add_api_route(f"/{_resource_type}/{{resource_id}}/_history/{{version}}", _vread_route, methods=["GET"],
                         summary=f"Read one version of a {_resource_type}", response_class=FhirJSONResponse,
                         response_model=None, responses=_responses(401, 403, 404, 422),
                         name=f"vread_{_resource_type}")

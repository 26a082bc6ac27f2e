"""Stored results as FHIR R4 resources: DiagnosticReport, Observation, ImagingStudy (with its retrieval Endpoint),
Organization (the issuer) and Patient (the pseudonym), each carrying its recognition for the requesting
institution as the project's extension (``data/StructureDefinition-hrx-recognition.json``).

Rules implemented:
- ids: a report's id is the store's row id of its first stored version (stable across versions, unique, never
  reused); its Observations are ``<report id>-<seq>``; an imaging report's ImagingStudy shares its id; a
  Patient's id is the pseudonym; an Organization's id is the institution id. The resident ID never appears.
- ``meta.versionId`` is the issuer's version; ``issued`` and every instant are in Beijing time, +08:00
  (codes/calendar.py), as answers without a requester's offset are (docs/rules.md, "Dates").
- every result names its issuer as ``performer`` (Observation, DiagnosticReport) or as the ``assigner`` of the
  study's identifiers (ImagingStudy): a reference to ``Organization/<institution id>`` with the institution's
  identifier (system ``urn:hrx:institution``) and name, readable and ``_include``-able.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime
from functools import cache, lru_cache
from importlib import resources as package_data
from typing import Any

from adapters.fhir.identity import INSTITUTION_SYSTEM, REPORT_NUMBER_SYSTEM
from adapters.fhir.imaging import DICOM_UID_SYSTEM
from adapters.fhir.lab import UCUM
from codes.calendar import beijing_iso
from exchange.recognize import Answer
from exchange.store import StoredObservation, StoredResult

RECOGNITION_ID = "hrx-recognition"
#: The canonical URL of the recognition extension (a URN, like the project's other systems: it names the
#: definition, wherever a server publishes it at ``/fhir/StructureDefinition/hrx-recognition``).
RECOGNITION_URL = f"urn:hrx:fhir:StructureDefinition:{RECOGNITION_ID}"
ITEM_SYSTEM = "urn:hrx:item"  # the unified (互认) item codes of the code book
CATEGORY_SYSTEM = "urn:hrx:item-category"  # the code book's item categories (biochemistry, CT, …)
LOCAL_CODE_SYSTEM = "urn:hrx:local-code:"  # + institution id: an issuer's local code sent without a system
PSEUDONYM_SYSTEM = "urn:hrx:pseudonym"
LOINC = "http://loinc.org"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"  # LAB, RAD
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"  # laboratory, imaging
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DICOM_MODALITY = "http://dicom.nema.org/resources/ontology/DCM"
ENDPOINT_CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
#: DICOM DIMSE retrieval (C-MOVE/C-GET by AE title, host and port) has no code in R4's connection types.
DIMSE_CONNECTION = "urn:hrx:endpoint-connection-type"
SERVICE_OF_KIND = {"lab": "LAB", "imaging": "RAD"}
OBSERVATION_CATEGORY_OF_KIND = {"lab": "laboratory", "imaging": "imaging"}
#: ImagingStudy.status of a result status (R4 ImagingStudyStatus).
STUDY_STATUS = {"cancelled": "cancelled", "entered-in-error": "entered-in-error"}


#: Instants as +08:00 text, memoized: a search's answer writes the same few thousand instants (issued, effective,
#: valid-until) several times each, and the conversion was most of building it.
_iso = lru_cache(maxsize=16384)(beijing_iso)


@cache
def structure_definition() -> dict[str, Any]:
    """The recognition extension's StructureDefinition, as the project publishes it."""
    text = package_data.files("exchange.fhir").joinpath(f"data/StructureDefinition-{RECOGNITION_ID}.json")
    return json.loads(text.read_text("utf-8"))


def organization_reference(book: Any, institution: str) -> dict[str, Any]:
    found = book.institutions.get(institution)
    reference: dict[str, Any] = {"reference": f"Organization/{institution}",
                                 "identifier": {"system": INSTITUTION_SYSTEM, "value": institution}}
    if found is not None:
        reference["display"] = found.name_zh
    return reference


def organization(book: Any, institution: str) -> dict[str, Any] | None:
    found = book.institutions.get(institution)
    if found is None:
        return None
    return {"resourceType": "Organization", "id": institution, "active": True,
            "identifier": [{"system": INSTITUTION_SYSTEM, "value": institution}],
            "name": found.name_zh, "alias": [found.name_en]}


def patient(pseudonym: str) -> dict[str, Any]:
    """A Patient known by its pseudonym only (the keyed HMAC of the resident ID, docs/rules.md "Privacy")."""
    return {"resourceType": "Patient", "id": pseudonym,
            "identifier": [{"use": "secondary", "system": PSEUDONYM_SYSTEM, "value": pseudonym}]}


def recognition(book: Any, answer: Answer, requester: str, at: datetime) -> dict[str, Any]:
    """One item's recognition for ``requester`` at ``at`` as the ``hrx-recognition`` extension."""
    parts: list[dict[str, Any]] = []
    if answer.item_code is not None:
        parts.append({"url": "item", "valueCoding": _item_coding(book, answer.item_code)})
    parts.append({"url": "requester", "valueReference": organization_reference(book, requester)})
    parts.append({"url": "evaluatedAt", "valueDateTime": _iso(at)})
    parts.append({"url": "status", "valueCode": str(answer.status)})
    if answer.tier is not None:
        parts.append({"url": "tier", "valueCode": answer.tier})
    if answer.catalogue_id is not None:
        parts.append({"url": "catalogue", "valueString": answer.catalogue_id})
    if answer.catalogue_version is not None:
        parts.append({"url": "catalogueVersion", "valueString": answer.catalogue_version})
    if answer.valid_until is not None:
        parts.append({"url": "validUntil", "valueDateTime": _iso(answer.valid_until)})
    for reason in answer.reasons:
        parts.append({"url": "reason", "extension": [{"url": "zh", "valueString": reason["zh"]},
                                                     {"url": "en", "valueString": reason["en"]}]})
    return {"url": RECOGNITION_URL, "extension": parts}


def _item_coding(book: Any, code: str) -> dict[str, Any]:
    item = book.items.get(code)
    coding: dict[str, Any] = {"system": ITEM_SYSTEM, "code": code}
    if item is not None:
        coding["display"] = item.name_zh
    return coding


def _concept(book: Any, unified: str | None, local_code: str, local_system: str, text: str | None = None
             ) -> dict[str, Any]:
    """The unified item, its LOINC code when it has one, and the issuer's own code."""
    codings = []
    item = book.items.get(unified) if unified else None
    if unified:
        codings.append(_item_coding(book, unified))
    if item is not None and item.loinc:
        codings.append({"system": LOINC, "code": item.loinc})
    codings.append({"system": local_system, "code": local_code})
    return {"coding": codings, "text": text or (item.name_zh if item is not None else local_code)}


def _category(book: Any, system: str, code: str, unified: str | None) -> list[dict[str, Any]]:
    codings = [{"system": system, "code": code}]
    item = book.items.get(unified) if unified else None
    if item is not None:
        codings.append({"system": CATEGORY_SYSTEM, "code": item.category})
    return [{"coding": codings}]


def _meta(version: int) -> dict[str, Any]:
    return {"versionId": str(version)}


def observation_id(report_id: int, seq: int) -> str:
    return f"{report_id}-{seq}"


def diagnostic_report(book: Any, result: StoredResult, fhir_id: int, extensions: list[dict[str, Any]]
                      ) -> dict[str, Any]:
    issuer = result.issuer
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": str(fhir_id), "meta": _meta(result.version)}
    if extensions:
        report["extension"] = extensions
    report.update({
        "identifier": [{"system": f"{REPORT_NUMBER_SYSTEM}{issuer}", "value": result.result_id}],
        "status": result.status,
        "category": _category(book, DIAGNOSTIC_SERVICE, SERVICE_OF_KIND[result.kind], result.unified_code),
        "code": _concept(book, result.unified_code, result.local_code, f"{LOCAL_CODE_SYSTEM}{issuer}"),
        "subject": {"reference": f"Patient/{result.patient}"},
        "effectiveDateTime": _iso(result.collected_at or result.reported_at),
        "issued": _iso(result.reported_at),
        "performer": [organization_reference(book, issuer)],
    })
    if result.observations:
        report["result"] = [{"reference": f"Observation/{observation_id(fhir_id, o.seq)}"}
                            for o in result.observations]
    if result.kind == "imaging":
        event = result.event
        if (event.get("study") or {}).get("study_instance_uid"):
            report["imagingStudy"] = [{"reference": f"ImagingStudy/{fhir_id}"}]
        text = event.get("report") or {}
        if text.get("impression"):
            report["conclusion"] = text["impression"]
        if text.get("findings"):
            report["presentedForm"] = [{"contentType": "text/plain; charset=utf-8", "language": "zh-CN",
                                        "title": "findings",
                                        "data": base64.b64encode(text["findings"].encode("utf-8")).decode()}]
    return report


def observation(book: Any, result: StoredResult, fhir_id: int, value: StoredObservation,
                extensions: list[dict[str, Any]]) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Observation", "id": observation_id(fhir_id, value.seq),
                                "meta": _meta(result.version)}
    if extensions:
        resource["extension"] = extensions
    resource.update({
        "status": result.status,
        "category": _category(book, OBSERVATION_CATEGORY, OBSERVATION_CATEGORY_OF_KIND[result.kind],
                              value.unified_code),
        "code": _concept(book, value.unified_code, value.local_code,
                         value.local_system or f"{LOCAL_CODE_SYSTEM}{result.issuer}"),
        "subject": {"reference": f"Patient/{result.patient}"},
        "effectiveDateTime": _iso(result.collected_at or result.reported_at),
        "issued": _iso(result.reported_at),
        "performer": [organization_reference(book, result.issuer)],
    })
    if value.value is not None:
        quantity: dict[str, Any] = {"value": value.value}
        if value.unit:
            quantity.update({"unit": value.unit, "system": UCUM, "code": value.unit})
        resource["valueQuantity"] = quantity
    elif value.value_text:
        resource["valueString"] = value.value_text
    if value.interpretation:
        resource["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": value.interpretation}]}]
    bounds: dict[str, Any] = {}
    for end, number in (("low", value.ref_low), ("high", value.ref_high)):
        if number is not None:
            bounds[end] = {"value": number, **({"unit": value.unit, "system": UCUM, "code": value.unit}
                                               if value.unit else {})}
    if value.ref_text:
        bounds["text"] = value.ref_text
    if bounds:
        resource["referenceRange"] = [bounds]
    return resource


def imaging_study(book: Any, result: StoredResult, fhir_id: int, extensions: list[dict[str, Any]]
                  ) -> dict[str, Any] | None:
    """The study of an imaging result, with its retrieval pointer as a contained Endpoint; None without a study."""
    event = result.event
    study = event.get("study") or {}
    uid = study.get("study_instance_uid")
    if not uid:
        return None
    assigner = organization_reference(book, result.issuer)
    resource: dict[str, Any] = {"resourceType": "ImagingStudy", "id": str(fhir_id), "meta": _meta(result.version)}
    endpoint = _endpoint(event.get("retrieval") or {})
    if endpoint is not None:
        resource["contained"] = [endpoint]
    if extensions:
        resource["extension"] = extensions
    identifiers = [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}", "assigner": assigner}]
    if study.get("accession_number"):
        identifiers.append({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                 "code": "ACSN"}]},
                            "value": study["accession_number"], "assigner": assigner})
    resource.update({"identifier": identifiers, "status": STUDY_STATUS.get(result.status, "available"),
                     "subject": {"reference": f"Patient/{result.patient}"}})
    if study.get("modality"):
        resource["modality"] = [{"system": DICOM_MODALITY, "code": study["modality"]}]
    if study.get("study_at"):
        resource["started"] = _iso(datetime.fromisoformat(study["study_at"]))
    if endpoint is not None:
        resource["endpoint"] = [{"reference": "#endpoint"}]
    if study.get("series_count") is not None:
        resource["numberOfSeries"] = study["series_count"]
    if study.get("instance_count") is not None:
        resource["numberOfInstances"] = study["instance_count"]
    description = study.get("description") or study.get("requested_procedure")
    if description:
        resource["description"] = description
    return resource


def _endpoint(retrieval: dict[str, Any]) -> dict[str, Any] | None:
    """The retrieval pointer: DICOMweb WADO-RS when the issuer gave one, else its DIMSE AE title, host and port."""
    if retrieval.get("wado_rs"):
        connection = {"system": ENDPOINT_CONNECTION, "code": "dicom-wado-rs"}
        address = retrieval["wado_rs"]
    elif retrieval.get("host") and retrieval.get("port"):
        connection = {"system": DIMSE_CONNECTION, "code": "dicom-dimse"}
        address = f"dicom://{retrieval.get('ae_title') or ''}@{retrieval['host']}:{retrieval['port']}"
    else:
        return None
    endpoint: dict[str, Any] = {
        "resourceType": "Endpoint", "id": "endpoint", "status": "active", "connectionType": connection,
        "payloadType": [{"text": "DICOM"}], "payloadMimeType": ["application/dicom"], "address": address}
    if retrieval.get("ae_title"):
        endpoint["name"] = retrieval["ae_title"]
    return endpoint

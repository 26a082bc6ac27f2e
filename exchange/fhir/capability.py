"""``GET /fhir/metadata``: the CapabilityStatement, made from the same table of search parameters the handlers
use (:data:`exchange.fhir.search.SEARCHES`), so it states exactly what the server does."""
from __future__ import annotations

from typing import Any

from exchange.fhir.resources import RECOGNITION_URL
from exchange.fhir.search import DEFAULT_COUNT, MAX_COUNT, SEARCHES

#: The operations the server defines, with the resource type they are invoked on (None: the system level).
OPERATIONS = {"lastn": ("Observation", "http://hl7.org/fhir/OperationDefinition/Observation-lastn"),
              "recognition-check": (None, "urn:hrx:fhir:OperationDefinition:recognition-check")}
#: Resources read by id (and, for results, by version), beyond the searched ones.
READ_ONLY = ("Organization", "Patient")


def capability_statement(software_version: str, published: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for name, search in SEARCHES.items():
        resource: dict[str, Any] = {
            "type": name, "versioning": "versioned", "readHistory": name == "DiagnosticReport",
            "conditionalRead": "not-supported",
            "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}]
            + ([{"code": "history-instance"}] if name == "DiagnosticReport" else []),
            "searchParam": [{"name": q.name, "type": q.type, "documentation": q.documentation}
                            for q in search.params]
            + [{"name": "_count", "type": "number",
                "documentation": f"page size, default {DEFAULT_COUNT}, at most {MAX_COUNT}"}],
        }
        if search.includes:
            resource["searchInclude"] = list(search.includes)
        if search.sorts:
            resource["searchParam"].append({
                "name": "_sort", "type": "special",
                "documentation": "one of " + ", ".join(search.sorts) + ", each optionally with '-' (descending); "
                f"default {search.default_sort}"})
        operations = [{"name": op, "definition": definition} for op, (on, definition) in OPERATIONS.items()
                      if on == name]
        if operations:
            resource["operation"] = operations
        resources.append(resource)
    for name in READ_ONLY:
        resource: dict[str, Any] = {"type": name, "interaction": [{"code": "read"}]}
        if name == "Patient":
            resource["interaction"].append({"code": "search-type"})
            resource["searchParam"] = [{"name": "identifier", "type": "token",
                                        "documentation": "urn:oid:2.16.156.10011.1.3|<resident ID>: the patient's "
                                        "pseudonymous id (the resident ID is never stored or echoed)"}]
        resources.append(resource)
    resources.append({"type": "StructureDefinition", "interaction": [{"code": "read"}]})
    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": published, "kind": "instance",
        "publisher": "HR Exchange",
        "description": "Read and search of lab and imaging results shared between hospitals, each with its "
                       "recognition (互认) for the requesting institution as the extension " + RECOGNITION_URL,
        "software": {"name": "HR Exchange (hrx)", "version": software_version},
        "implementation": {"description": "HR Exchange FHIR R4 read/search server"},
        "fhirVersion": "4.3.0", "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Every search is of one patient (patient=Patient/<id>); unknown parameters are "
                             "ignored and reported in an OperationOutcome entry, or refused (400) under "
                             "Prefer: handling=strict. Paging follows the Bundle's next link.",
            "security": {"cors": False, "description": "OAuth2 bearer tokens from POST /api/v1/auth/token; a HIS "
                         "names the clinician it acts for in X-HRX-On-Behalf-Of. Results are read within a "
                         "treatment relationship only, and every read is audited."},
            "resource": resources,
            "operation": [{"name": op, "definition": definition} for op, (on, definition) in OPERATIONS.items()
                          if on is None],
        }],
    }

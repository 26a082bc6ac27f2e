"""The FHIR R4 specification's examples (tests/data/fhir/examples) and their localisation for the exchange.

:func:`localise` adds, in memory, only what the exchange's profile requires on top of FHIR R4 and the
examples do not carry (see tests/data/fhir/examples/README.md): the subject Patient with a resident ID, the
performer Organization with an ``urn:hrx:institution`` identifier and, when asked because the example has
none, a ``DiagnosticReport.identifier``. Everything else is the published example as it is.
"""
from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).parents[1] / "data" / "fhir" / "examples"
BASE = "https://example.com/base"
RESIDENT_ID = "110105198003120024"
INSTITUTION = "bj-xicheng-001"


@cache
def _read(name: str) -> str:
    return (EXAMPLES / name).read_text("utf-8")


def example(name: str) -> dict[str, Any]:
    """A fresh copy of one published example (``name`` without ``.json``)."""
    return json.loads(_read(f"{name}.json"))


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"{BASE}/{resource['resourceType']}/{resource['id']}", "resource": resource}


def as_bundle(main: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    """A collection Bundle of a standalone example and the examples it references; a Bundle as it is."""
    bundle = copy.deepcopy(main) if main["resourceType"] == "Bundle" else {
        "resourceType": "Bundle", "type": "collection", "entry": [_entry(copy.deepcopy(main))]}
    bundle["entry"].extend(_entry(copy.deepcopy(r)) for r in extra)
    return bundle


def reports(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]


def localise(main: dict[str, Any], *extra: dict[str, Any], identifier: str | None = None,
             institution: str = INSTITUTION, resident_id: str = RESIDENT_ID) -> dict[str, Any]:
    """The example as a Bundle the exchange can take: the profile's additions described above."""
    bundle = as_bundle(main, *extra)
    present = {e.get("fullUrl") for e in bundle["entry"]} | {
        f"{e['resource']['resourceType']}/{e['resource'].get('id')}" for e in bundle["entry"]}

    def add(kind: str, resource_id: str, resource: dict[str, Any]) -> None:
        if f"{kind}/{resource_id}" not in present:
            bundle["entry"].append(_entry({"resourceType": kind, "id": resource_id, **resource}))
            present.add(f"{kind}/{resource_id}")

    for report in reports(bundle):
        if identifier is not None and not report.get("identifier"):
            report["identifier"] = [{"system": "urn:example:localised", "value": identifier}]
        subject = (report.get("subject") or {}).get("reference") or "Patient/localised"
        report["subject"] = {"reference": subject}
        add("Patient", subject.rsplit("/", 1)[-1], {
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": resident_id}]})
        performers = report.setdefault("performer", [])
        organization = next((p["reference"] for p in performers
                             if p.get("reference", "").startswith("Organization/")), None)
        if organization is None:
            organization = "Organization/localised"
            performers.append({"reference": organization})
        add("Organization", organization.rsplit("/", 1)[-1], {
            "identifier": [{"system": "urn:hrx:institution", "value": institution}]})
    return bundle


def contained_form(bundle: dict[str, Any]) -> dict[str, Any]:
    """Derived: the same Bundle with each report's Observations contained in it and referenced as ``#id``."""
    derived = copy.deepcopy(bundle)
    for report in reports(derived):
        contained = []
        for ref in report.get("result", []):
            kind, _, rid = ref["reference"].partition("/")
            entry = next(e for e in derived["entry"]
                         if e["resource"]["resourceType"] == kind and e["resource"].get("id") == rid)
            derived["entry"].remove(entry)
            contained.append(entry["resource"])
            ref["reference"] = f"#{rid}"
        report["contained"] = contained
    return derived

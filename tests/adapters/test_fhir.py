"""The FHIR R4 adapter: parsing, mapping with unit conversion, and a precise error for each bad input."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from adapters.fhir import (CODE_TEXT_SYSTEM, BundleRefused, Issue, bundle_events, operation_outcome, parse_bundle,
                           result_id)
from adapters.report import AdapterError
from adapters.pipeline import ResultPipeline
from schemas import events

BUNDLE = json.loads((Path(__file__).parent.parent / "data/fhir/lab-bundle.json").read_text("utf-8"))
RESIDENT_ID = "110105198003120024"


@pytest.fixture
def pipeline(book, pseudonymizer) -> ResultPipeline:  # type: ignore[no-untyped-def]
    return ResultPipeline(book, pseudonymizer)


def _entry(bundle: dict, kind: str) -> dict:  # type: ignore[type-arg]
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind)


def test_a_bundle_becomes_one_validated_event_per_report(pipeline, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    [event] = bundle_events(pipeline, BUNDLE)
    events.validate("lab-result.v1", event)
    assert event["issuer"] == "bj-xicheng-001" and event["result_id"] == "BJXC-TEST-1"
    assert (event["version"], event["status"]) == (2, "final")
    assert event["patient"]["pseudonym"] == pseudonymizer.pseudonym(RESIDENT_ID)
    assert RESIDENT_ID not in json.dumps(event)
    glucose, potassium = event["observations"]
    # mg/dL → mmol/L through the hospital's mapping table (factor 1/18.016)
    assert glucose["item"]["unified_code"] == "L0032" and glucose["unit"] == "mmol/L"
    assert glucose["value"] == pytest.approx(99 * 0.05551)
    assert glucose["original"] == {"value": 99.0, "unit": "mg/dL",
                                   "reference_range": {"low": 70.0, "high": 110.0, "text": None}}
    assert glucose["reference_range"]["low"] == pytest.approx(70 * 0.05551)
    # LOINC-coded observation maps through the items' LOINC column without a hospital row
    assert potassium["item"]["unified_code"] == "L0045" and potassium["value"] == 4.1
    assert event["item"]["unified_code"] == "L0032"


def test_unmapped_local_codes_are_kept_not_dropped(pipeline) -> None:  # type: ignore[no-untyped-def]
    bundle = copy.deepcopy(BUNDLE)
    _entry(bundle, "Observation")["code"]["coding"][0]["code"] = "NO-SUCH-CODE"
    [event] = bundle_events(pipeline, bundle)
    first = event["observations"][0]
    assert first["item"]["unified_code"] is None and first["item"]["local_code"] == "NO-SUCH-CODE"
    assert first["item"]["mapping_issue"]


def test_unexpected_unit_makes_the_observation_unmapped(pipeline) -> None:  # type: ignore[no-untyped-def]
    bundle = copy.deepcopy(BUNDLE)
    obs = _entry(bundle, "Observation")
    obs["valueQuantity"]["code"] = obs["valueQuantity"]["unit"] = "U/L"
    [event] = bundle_events(pipeline, bundle)
    first = event["observations"][0]
    assert first["item"]["unified_code"] is None and "U/L" in first["item"]["mapping_issue"]
    assert first["item"]["mapping_issue_code"] == "unit_not_convertible" and first["value"] == 99


def _broken(path: str, value: object) -> dict:  # type: ignore[type-arg]
    bundle = copy.deepcopy(BUNDLE)
    kind, _, field = path.partition(".")
    target = bundle if kind == "Bundle" else _entry(bundle, kind)
    if value is None:
        target.pop(field)
    else:
        target[field] = value
    return bundle


@pytest.mark.parametrize("bundle, where, words", [
    (_broken("Bundle.type", "history"), "Bundle.type", "transaction or collection"),
    (_broken("DiagnosticReport.identifier", None), "identifier", "idempotency"),
    (_broken("DiagnosticReport.issued", None), "issued", "required"),
    (_broken("DiagnosticReport.status", "draft"), "status", "draft"),
    (_broken("DiagnosticReport.result", [{"reference": "urn:uuid:missing"}]), "result[0]", "does not resolve"),
    (_broken("Organization.identifier", [{"system": "urn:hrx:institution", "value": "nowhere-999"}]), None,
     "unknown institution"),
    (_broken("Organization.identifier", [{"system": "urn:other", "value": "x"}]), "identifier", "urn:hrx:institution"),
    (_broken("Patient.identifier", [{"system": "urn:oid:2.16.156.10011.1.3", "value": "110105198003120021"}]),
     "identifier[0]", "check character"),
    (_broken("Patient.identifier", None), "identifier", "resident ID"),
    (_broken("Bundle.entry", []), "Bundle.entry", "no DiagnosticReport"),
    ({"resourceType": "Patient"}, "Bundle", "expected a FHIR Bundle"),
    ({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Observation"}}]},
     "Bundle.entry.0.resource", "Field required"),
])
def test_bad_bundles_are_refused_with_the_element_named(pipeline, bundle, where, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AdapterError) as info:
        bundle_events(pipeline, bundle)
    error = info.value
    assert words in error.message
    if where:
        assert error.location and where in error.location
    outcome = operation_outcome(error)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "error"
    assert "110105198003120021" not in json.dumps(outcome)


def test_a_bundle_with_one_bad_report_publishes_none(pipeline) -> None:  # type: ignore[no-untyped-def]
    bundle = copy.deepcopy(BUNDLE)
    second = copy.deepcopy(next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"))
    second["fullUrl"] = "urn:uuid:00000000-0000-4000-8000-999999999999"
    second["resource"]["identifier"] = []
    bundle["entry"].append(second)
    assert len(parse_bundle(BUNDLE)) == 1
    with pytest.raises(AdapterError, match="identifier"):
        bundle_events(pipeline, bundle)


def test_meta_version_id_sets_the_version(pipeline) -> None:  # type: ignore[no-untyped-def]
    bundle = _broken("DiagnosticReport.meta", {"versionId": "7"})
    _entry(bundle, "DiagnosticReport")["status"] = "corrected"
    [event] = bundle_events(pipeline, bundle)
    assert (event["version"], event["status"]) == (7, "corrected")


def test_result_id_is_keyed_on_system_and_value() -> None:
    assert result_id(None, "R1", "bj-xicheng-001") == "R1"
    assert result_id("urn:hrx:report-id:bj-xicheng-001", "R1", "bj-xicheng-001") == "R1"
    other_issuer = "urn:hrx:report-id:bj-xicheng-002"
    assert result_id(other_issuer, "R1", "bj-xicheng-001") == f"{other_issuer}|R1"
    assert result_id("http://lis.example/reports", "R1", "bj-xicheng-001") == "http://lis.example/reports|R1"
    long_system = "http://lis.example/" + "a" * 120
    long = result_id(long_system, "R1", "bj-xicheng-001")
    assert long.startswith("sha256:") and len(long) == 71 and long == result_id(long_system, "R1", "other")
    assert long != result_id(long_system, "R2", "bj-xicheng-001")


def test_every_r4_value_type_and_component_is_kept(pipeline) -> None:  # type: ignore[no-untyped-def]
    bundle = copy.deepcopy(BUNDLE)
    glucose, potassium = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    kinds = [("valueInteger", 7, ("quantity", 7.0, None)), ("valueBoolean", True, ("coded", None, "true")),
             ("valueRange", {"low": {"value": 1, "unit": "mmol/L"}, "high": {"value": 2, "unit": "mmol/L"}},
              ("text", None, "1 mmol/L–2 mmol/L")),
             ("valueRatio", {"numerator": {"value": 1}, "denominator": {"value": 320}}, ("text", None, "1/320")),
             ("valuePeriod", {"start": "2026-11-20T08:00:00+08:00"}, ("text", None, "2026-11-20T08:00:00+08:00/"))]
    potassium.pop("valueQuantity")
    potassium["component"] = [{"code": {"coding": [{"system": "urn:hrx:local-code:bj-xicheng-001", "code": f"C{i}"}]},
                               field: value} for i, (field, value, _) in enumerate(kinds)]
    potassium["component"].append({"code": {"text": "comment"}, "dataAbsentReason": {"text": "not asked"}})
    [event] = bundle_events(pipeline, bundle)
    glucose_obs, potassium_obs, *components = event["observations"]
    assert potassium_obs["value_type"] == "none"
    assert [(c["value_type"], c["value"], c["value_text"]) for c in components[:-1]] == [k[2] for k in kinds]
    assert (components[-1]["value_type"], components[-1]["value_text"]) == ("none", "data absent: not asked")
    assert components[-1]["item"]["local_system"] == CODE_TEXT_SYSTEM


def test_a_practitioner_among_the_performers_is_not_the_issuer(pipeline) -> None:  # type: ignore[no-untyped-def]
    bundle = copy.deepcopy(BUNDLE)
    bundle["entry"].append({"fullUrl": "urn:uuid:practitioner", "resource": {"resourceType": "Practitioner"}})
    report = _entry(bundle, "DiagnosticReport")
    report["performer"].insert(0, {"reference": "urn:uuid:practitioner"})
    [event] = bundle_events(pipeline, bundle)
    assert event["issuer"] == "bj-xicheng-001"


def test_a_version_beyond_the_store_is_refused(pipeline) -> None:  # type: ignore[no-untyped-def]
    bundle = _broken("DiagnosticReport.meta", {"versionId": str(2**31)})
    with pytest.raises(AdapterError, match="larger than 2147483647") as info:
        bundle_events(pipeline, bundle)
    assert info.value.location and info.value.location.endswith(".meta.versionId")


def test_an_outcome_is_bounded_and_says_what_it_left_out() -> None:
    issues = [Issue("structure", "x" * 10_000, ("Bundle.entry[0]",)) for _ in range(250)]
    outcome = operation_outcome(BundleRefused(issues, total=300))
    assert len(outcome["issue"]) == 101 and outcome["issue"][-1]["diagnostics"] == "200 more issue(s) not shown"
    assert outcome["issue"][0]["diagnostics"].endswith("… (8000 more characters)")
    assert len(json.dumps(outcome)) < 250_000

"""Inputs on which ``python -m fuzz fhir`` found the Bundle reader failing with something other than its
refusal (tests/data/fhir/fuzz-crashes/): each must now be an AdapterError, which ``POST /fhir`` answers with
400 and an OperationOutcome instead of a 500."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.fhir import bundle_events, operation_outcome
from adapters.report import AdapterError
from adapters.pipeline import ResultPipeline
from adapters.pseudonymize import Pseudonymizer
from codes import CodeBook

DATA = Path(__file__).parent.parent / "data" / "fhir"
CRASHES = DATA / "fuzz-crashes"
BUNDLE = json.loads((DATA / "lab-bundle.json").read_text("utf-8"))


@pytest.fixture
def pipeline(book: CodeBook, pseudonymizer: Pseudonymizer) -> ResultPipeline:
    return ResultPipeline(book, pseudonymizer)


@pytest.mark.parametrize(("name", "escaped"), [
    ("unknown-resource-type.json", "KeyError"),  # resourceType "Observ`tion": the model lookup's KeyError
    ("primitive-extension-not-an-object.json", "AttributeError"),  # {"_type": "2025"}: its validator's
    ("list-where-text-expected.json", "TypeError"),  # a list where fhir.resources concatenates text
])
def test_a_bundle_fhir_resources_fails_on_is_a_structure_refusal(pipeline: ResultPipeline, name: str,
                                                                  escaped: str) -> None:
    bundle = json.loads((CRASHES / name).read_text("utf-8"))
    with pytest.raises(AdapterError) as refused:
        bundle_events(pipeline, bundle)
    assert (refused.value.code, refused.value.location) == ("structure", "Bundle")
    assert f"({escaped})" in refused.value.message
    assert operation_outcome(refused.value)["issue"][0]["code"] == "structure"  # POST /fhir: 400


@pytest.mark.parametrize("resource_type", ["Nope", 5, None, ["Observation"], {"resourceType": "Observation"}])
def test_any_resource_type_that_names_no_r4_resource_is_refused(pipeline: ResultPipeline,
                                                               resource_type: Any) -> None:
    bundle = copy.deepcopy(BUNDLE)
    bundle["entry"][-1]["resource"]["resourceType"] = resource_type
    with pytest.raises(AdapterError) as refused:
        bundle_events(pipeline, bundle)
    assert refused.value.code == "structure" and refused.value.location.startswith("Bundle")


@pytest.mark.parametrize("element", ["_type", "_timestamp"])
@pytest.mark.parametrize("value", ["2025", 7, ["x"], True])
def test_a_primitive_extension_that_is_not_an_object_is_refused(pipeline: ResultPipeline, element: str,
                                                                value: Any) -> None:
    bundle = {**copy.deepcopy(BUNDLE), element: value}
    with pytest.raises(AdapterError) as refused:
        bundle_events(pipeline, bundle)
    assert refused.value.code == "structure"

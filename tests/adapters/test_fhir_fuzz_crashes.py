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
from adapters.pipeline import AdapterError, ResultPipeline
from adapters.pseudonymize import Pseudonymizer
from codes import CodeBook

DATA = Path(__file__).parent.parent / "data" / "fhir"
CRASHES = DATA / "fuzz-crashes"
BUNDLE = json.loads((DATA / "lab-bundle.json").read_text("utf-8"))


@pytest.fixture
def pipeline(book: CodeBook, pseudonymizer: Pseudonymizer) -> ResultPipeline:
    return ResultPipeline(book, pseudonymizer)


def test_an_observation_misspelt_as_a_resource_type_r4_lacks_is_a_structure_error(pipeline: ResultPipeline) -> None:
    # resourceType "Observ`tion": fhir.resources let its model lookup's KeyError escape pydantic.
    bundle = json.loads((CRASHES / "unknown-resource-type.json").read_text("utf-8"))
    with pytest.raises(AdapterError) as refused:
        bundle_events(pipeline, bundle)
    assert (refused.value.code, refused.value.location) == ("structure", "Bundle.entry")
    assert operation_outcome(refused.value)["issue"][0]["expression"] == ["Bundle.entry"]


@pytest.mark.parametrize("resource_type", ["Nope", 5, None, ["Observation"], {"resourceType": "Observation"}])
def test_any_resource_type_that_names_no_r4_resource_is_refused(pipeline: ResultPipeline, resource_type: Any) -> None:
    bundle = copy.deepcopy(BUNDLE)
    bundle["entry"][-1]["resource"]["resourceType"] = resource_type
    with pytest.raises(AdapterError) as refused:
        bundle_events(pipeline, bundle)
    assert refused.value.code == "structure" and refused.value.location.startswith("Bundle.entry")

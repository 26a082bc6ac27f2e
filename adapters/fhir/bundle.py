"""Reading a Bundle: R4 structure validation and the Bundle types the exchange accepts.

Rules implemented:
- the Bundle is parsed with the R4 models of fhir.resources (``fhir.resources.R4B``: R4-compatible); every
  structural problem is reported with its element (up to the OperationOutcome's bound), not only the first;
- ``Bundle.type`` is ``transaction`` or ``collection``: the two ways a sender pushes results (a
  ``searchset`` or ``history`` is an answer to someone's query, not a submission).
"""
from __future__ import annotations

from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from adapters.fhir.outcome import MAX_ISSUES, BundleRefused, Issue
from adapters.fhir.references import ResourceIndex
from adapters.report import AdapterError

ACCEPTED_TYPES = ("transaction", "collection")


def read_bundle(data: Any) -> tuple[Any, ResourceIndex]:
    """The validated Bundle and the index of its resources; BundleRefused naming each bad element."""
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise AdapterError("expected a FHIR Bundle resource", "Bundle", code="structure")
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        issues = [Issue("structure", e["msg"], ("Bundle." + ".".join(str(p) for p in e["loc"]),))
                  for e in errors[:MAX_ISSUES]]
        raise BundleRefused(issues, len(errors)) from None
    except Exception as exc:  # noqa: BLE001 - validating decoded JSON has no effect to undo: any failure refuses
        # Some of fhir.resources' own validators fail on malformed input with an error pydantic does not
        # collect: a nested resourceType R4 does not define (KeyError) or that is not a string (TypeError), a
        # primitive's "_element" that is not an object (AttributeError, TypeError). Found by fuzzing.
        raise AdapterError(f"the Bundle has an element fhir.resources cannot read ({type(exc).__name__}): an "
                           "unknown resourceType, or an element of the wrong JSON type", "Bundle",
                           code="structure") from None
    if bundle.type not in ACCEPTED_TYPES:
        raise AdapterError(f"Bundle.type {bundle.type!r} is not accepted: send a transaction or collection",
                           "Bundle.type")
    return bundle, ResourceIndex(bundle)

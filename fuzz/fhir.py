"""FHIR harness: the body of ``POST /fhir`` → a Bundle → lab reports → events.

What ``handle_bundle`` (``exchange/api/fhir.py``) does before publishing: the JSON is decoded (a body that is
not JSON is the API's 400, before the adapter sees it), then :func:`adapters.fhir.bundle_events` parses the
Bundle with fhir.resources and runs each report through the shared pipeline (the real code book, a
pseudonymizer under a fixed key); a refusal is answered with :func:`~adapters.fhir.operation_outcome`.
Mutations are mostly edits of the JSON tree (:mod:`fuzz.jsontree`).

Contract: ``bundle_events`` returns the events or raises :class:`~adapters.pipeline.AdapterError`.
"""
from __future__ import annotations

import orjson

from fuzz.harness import FUZZ_KEY, fuzz, instrumented
from fuzz.jsontree import mutate

with instrumented("fhir_core"):
    from adapters.fhir import bundle_events, operation_outcome
    from adapters.report import AdapterError
    from adapters.pipeline import ResultPipeline
    from adapters.pseudonymize import Pseudonymizer
    from codes import load_codebook

PIPELINE = ResultPipeline(load_codebook(), Pseudonymizer(FUZZ_KEY))


def one_input(data: bytes) -> None:
    try:
        bundle = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    try:
        bundle_events(PIPELINE, bundle)
    except AdapterError as error:
        orjson.dumps(operation_outcome(error))


if __name__ == "__main__":
    fuzz(one_input, mutate)

"""Fixtures of the CSV adapter tests: a pipeline whose publisher records instead of sending.

The code book, pseudonymizer, broker, database and engine fixtures come from the plugin in tests/fixtures/.
"""
from __future__ import annotations

import pytest

from adapters.pipeline import ResultPipeline
from tests.adapters.csv.csvdata import Recorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def pipeline(book, pseudonymizer, recorder) -> ResultPipeline:  # type: ignore[no-untyped-def]
    return ResultPipeline(book, pseudonymizer, recorder)  # type: ignore[arg-type]

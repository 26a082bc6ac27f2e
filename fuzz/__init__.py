"""Coverage-guided fuzzing of the adapters' parsers with atheris (libFuzzer for Python).

One harness per door: :mod:`fuzz.hl7` (HL7 v2 messages and batch files), :mod:`fuzz.csv` (LIS exports),
:mod:`fuzz.fhir` (FHIR R4 Bundles) and :mod:`fuzz.dicom` (C-STORE data sets). Each checks the adapter's
contract: an input gives a result or the adapter's documented refusal; any other exception, a hang or
unbounded memory is a crash. ``python -m fuzz`` runs them (see :mod:`fuzz.__main__`); each harness also runs
alone as ``python -m fuzz.<target> [libFuzzer options] [corpus dirs or input files]``, which replays a crash
when given its input file. Seed corpora are kept in ``fuzz/corpus/<target>/``.

Nothing here imports the project at import time: each harness imports it inside atheris's instrumentation,
so that coverage is collected.
"""
from __future__ import annotations

#: The harnesses, in the order ``python -m fuzz`` runs them.
TARGETS = ("hl7", "csv", "fhir", "dicom")

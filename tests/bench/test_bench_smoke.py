"""The benchmark scripts run (tiny sizes, no timing asserted: speed is measured by ``make bench``, never tested)."""
from __future__ import annotations

from pathlib import Path


from bench import fhir, validator_diff
from bench.__main__ import markdown


def test_fhir_benchmark_runs_on_tiny_sizes() -> None:
    outcome = fhir.run(n=5)
    assert outcome.status == "done"
    assert set(outcome.figures) >= {"parse_only_bundles_per_s", "post_fhir_bundles_per_s"}
    record = {"date": "2026-01-01", "mode": "quick", "command": "test", "seconds": 1.0,
              "machine": {"nproc": 2, "cpu": "x", "memory_gib": 1, "os": "y"}, "versions": {"python": "3"},
              "benchmarks": [outcome.as_dict()]}
    assert "## fhir" in markdown(record)


def test_fast_validator_is_never_more_lenient_than_jsonschema() -> None:
    checked, problems = validator_diff.run(samples=1)
    assert checked > 1000 and problems == []


def test_validator_diff_catches_a_lenient_fast_validator(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from exchange import events

    monkeypatch.setattr(events, "_fast_validator", lambda name: lambda event: True)
    checked, problems = validator_diff.run(samples=1)
    assert checked > 1000 and len(problems) > 100


def test_results_directory_is_in_the_package() -> None:
    assert (Path(fhir.__file__).parent / "results").is_dir()

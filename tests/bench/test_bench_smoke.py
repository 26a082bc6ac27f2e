"""The benchmark scripts run (tiny sizes, no timing asserted: speed is measured by ``make bench``, never tested)."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench import fhir, validator_diff
from bench.__main__ import markdown


@pytest.mark.integration  # starts a tansu broker and posts through the API
def test_fhir_benchmark_runs_on_tiny_sizes() -> None:
    outcome = fhir.run(n=5)
    assert outcome.status == "done"
    assert set(outcome.figures) >= {"parse_only_bundles_per_s", "post_fhir_bundles_per_s"}
    record = {"date": "2026-01-01", "mode": "quick", "command": "test", "seconds": 1.0,
              "code": "0123456789ab", "machine": {"nproc": 2, "cpu": "x", "memory_gib": 1, "os": "y"},
              "versions": {"python": "3"},
              "benchmarks": [outcome.as_dict()]}
    text = markdown(record)
    assert "## fhir" in text and "at commit 0123456789ab" in text


def test_fast_validator_is_never_more_lenient_than_jsonschema() -> None:
    checked, problems = validator_diff.run(samples=1)
    assert checked > 1000 and problems == []


def test_validator_diff_catches_a_lenient_fast_validator(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from schemas import events

    monkeypatch.setattr(events, "_fast_validator", lambda name: lambda event: True)
    checked, problems = validator_diff.run(samples=1)
    assert checked > 1000 and len(problems) > 100


def test_results_directory_is_in_the_package() -> None:
    assert (Path(fhir.__file__).parent / "results").is_dir()


@pytest.mark.integration  # runs git
def test_results_name_the_commit_they_measured(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    from bench import common

    def git(*args: str) -> str:
        identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.org"]
        return subprocess.run(["git", "-C", str(tmp_path), *identity, *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    monkeypatch.setattr(common, "ROOT", tmp_path)
    assert common.code_version() is None  # not a checkout
    git("init", "-q")
    (tmp_path / "engine.py").write_text("fast = True\n")
    git("add", "engine.py")
    git("commit", "-q", "-m", "measured")
    head = git("rev-parse", "--short=12", "HEAD")
    assert common.code_version() == head
    (tmp_path / "notes.txt").write_text("untracked files do not make a run dirty\n")
    assert common.code_version() == head
    (tmp_path / "engine.py").write_text("fast = False\n")
    assert common.code_version() == head + "-dirty"


@pytest.mark.integration  # measures in a child process
def test_csv_benchmark_runs_on_tiny_sizes() -> None:
    from bench import csv

    outcome = csv.run(sizes=(100, 300))
    assert outcome.status == "done", outcome.notes
    assert outcome.figures["300_rows"]["published_rows"] == 300
    assert set(outcome.ratios) == {"100_rows_ours_vs_bare_csv", "300_rows_ours_vs_bare_csv"}
    assert set(outcome.goals) == {"300_rows_within_60_s", "peak_rss_growth_300_le_3x_100_plus_16_mib"}


def test_the_csv_benchmark_is_registered() -> None:
    from bench.__main__ import ORDER

    assert "csv" in ORDER


def test_the_scale_out_benchmark_is_registered() -> None:
    from bench.__main__ import ORDER

    assert "scale_out" in ORDER

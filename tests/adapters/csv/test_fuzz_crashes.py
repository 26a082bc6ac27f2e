"""Cells that crashed the import instead of rejecting their row, found after ``python -m fuzz`` showed the same
mistake in the DICOM adapter: ``str.isdigit()`` is true for superscript digits ("²"), which ``int()`` refuses.
``import_file`` never raises for bad data: such a row is rejected with its column named."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from adapters.csv import import_file, load_profile
from adapters.pipeline import ResultPipeline
from schemas.topics import TOPIC_LAB
from tests.adapters.csv.csvdata import RID_B, Recorder, write_export

HEADER = ["Resident ID", "Sex", "Birth Year", "Report No", "Report Version", "Test Code", "Result", "Units", "Status",
          "Reported"]
#: The shipped English profile, with a birth-year column (a field no shipped profile maps).
PROFILE = dataclasses.replace(load_profile("lis-generic-en"),
                              columns={**load_profile("lis-generic-en").columns, "birth_year": ("Birth Year",)})


def _import(tmp_path: Path, pipeline: ResultPipeline, birth_year: str, version: str):  # type: ignore[no-untyped-def]
    row = [RID_B, "F", birth_year, "EN-1", version, "CRP", "12.5", "mg/L", "F", "2025-03-03 11:00"]
    return import_file(write_export(tmp_path, [row], header=HEADER), "zj-hz-001", PROFILE, pipeline)


@pytest.mark.parametrize("version", ["²", "1²", "٣"])  # superscripts are no numbers; Arabic-Indic three is one
def test_a_version_that_only_looks_like_a_number(tmp_path: Path, pipeline: ResultPipeline, recorder: Recorder,
                                                version: str) -> None:
    summary = _import(tmp_path, pipeline, "1992", version)
    if version.isdecimal():
        assert summary.published_reports == 1 and recorder.events(TOPIC_LAB)[0]["version"] == 3
    else:
        assert summary.rejected_rows == 1 and "is not a positive whole number" in summary.problems[0].message


@pytest.mark.parametrize("year", ["¹⁹⁹²", "19９2"])
def test_a_birth_year_that_only_looks_like_a_number(tmp_path: Path, pipeline: ResultPipeline, recorder: Recorder,
                                                   year: str) -> None:
    summary = _import(tmp_path, pipeline, year, "1")
    if year.isdecimal():
        assert recorder.events(TOPIC_LAB)[0]["patient"]["birth_year"] == 1992
    else:
        assert summary.rejected_rows == 1 and "is not a year" in summary.problems[0].message

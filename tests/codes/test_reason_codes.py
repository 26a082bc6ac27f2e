"""Reason codes are part of the code book: the directory's own reason_codes.csv, else the shipped one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from codes import CodeError, load_codebook
from codes.book import SHIPPED_DIR
from codes.cli import catalogue
from codes.loader import load_dir

HEADER = "code,reason_zh,reason_en,counts_as_non_recognition,note_required\n"


def test_the_shipped_codes(book):
    assert list(book.reason_codes) == ["01", "02", "03", "04", "05", "06", "07", "08", "98", "99"]
    assert book.reason_codes["08"].note_required and not book.reason_codes["01"].note_required
    assert not book.reason_codes["98"].counts_as_non_recognition and book.reason_codes["01"].counts_as_non_recognition


def test_a_directory_without_its_own_uses_the_shipped_codes(book, data_copy):
    (data_copy / "reason_codes.csv").unlink()
    without = load_codebook(data_copy)
    assert without.reason_codes == book.reason_codes
    # The version names the data used: the shipped codes count as if they were in the directory.
    assert without.version == book.version


def test_a_directory_with_its_own_uses_only_those(book, data_copy):
    (data_copy / "reason_codes.csv").write_text(HEADER + "01,病情变化,Changed,yes,no\n06,患者要求,Asked,yes,yes\n",
                                               "utf-8")
    own = load_codebook(data_copy)
    assert list(own.reason_codes) == ["01", "06"]
    assert own.reason_codes["06"].note_required and own.reason_codes["01"].zh == "病情变化"
    assert own.version != book.version


@pytest.mark.parametrize("rows, line, message", [
    ("01,a,A,yes,no\n01,b,B,yes,no\n", 3, "duplicate reason code 01"),
    ("01,a,A,maybe,no\n", 2, "counts_as_non_recognition must be yes or no, not 'maybe'"),
    ("01,a,A,yes,\n", 2, "note_required must be yes or no"),
    ("01,,A,yes,no\n", 2, "reason 01: reason_zh is empty"),
    ("0 1,a,A,yes,no\n", 2, "bad reason code '0 1'"),
    ("09,a,A,yes,no\n", 2, "not a reason code the decision event contract (schemas/decision.v1.json) carries"),
    ("08,a,A,yes,no\n", 2, "the decision event contract requires a note for it: note_required must be yes"),
    ("", 0, "no reason codes: a rejection could not be recorded"),
])
def test_problems_are_reported_with_their_line(data_copy, rows, line, message):
    path = data_copy / "reason_codes.csv"
    path.write_text(HEADER + rows, "utf-8")
    _, problems = load_dir(data_copy)
    assert [(Path(p.file), p.line) for p in problems if message in p.message] == [(path, line)], problems
    with pytest.raises(CodeError):
        load_codebook(data_copy)


def test_a_file_without_the_columns_is_refused(data_copy):
    (data_copy / "reason_codes.csv").write_text("code,reason\n01,变化\n", "utf-8")
    _, problems = load_dir(data_copy)
    assert [str(p) for p in problems] == [
        f"{data_copy / 'reason_codes.csv'}:1: missing column(s): reason_zh, reason_en, counts_as_non_recognition, "
        "note_required"]


def test_validate_checks_the_reason_codes(tmp_path):
    root = tmp_path / "codes"
    shutil.copytree(SHIPPED_DIR, root)
    (root / "reason_codes.csv").write_text(HEADER + "42,a,A,yes,no\n", "utf-8")
    result = CliRunner().invoke(catalogue, ["validate", str(root)], obj={})
    assert result.exit_code == 1
    assert "reason_codes.csv:2: reason 42: not a reason code the decision event contract" in result.output

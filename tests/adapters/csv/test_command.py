"""``hrx adapter csv`` (exchange/cli/adapter_csv.py): its progress report, its output and exit codes."""
from __future__ import annotations

import pytest

import io
import subprocess
import sys

from click.testing import CliRunner

from exchange.cli.adapter_csv import RowProgress
from schemas.resident_id import make_resident_id
from tests.adapters.csv.csvdata import RID_A, SAMPLE, lis_row, run_import, write_export
from tests.fixtures.pseudonyms import TEST_KEY


def test_progress_is_shown_for_large_files_on_a_pipe(tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    rows = [lis_row(report=f"R{i}", rid=make_resident_id(f"3301061985031{i:04d}")) for i in range(20)]
    summary = run_import(write_export(tmp_path, rows), pipeline, batch_reports=7,
                         progress=lambda total, label: RowProgress(total, label, stream=stream, threshold=10,
                                                                   tty=False))
    assert summary.published_reports == 20
    lines = stream.getvalue().splitlines()
    assert lines[0] == "checking rows: 10% (2/20)" and "publishing: 100% (20/20)" in lines
    quiet = io.StringIO()
    with RowProgress(20, "rows", stream=quiet, threshold=5000, tty=False) as update:
        update(20)
    assert quiet.getvalue() == ""


def test_the_command_prints_problems_and_a_summary(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    from exchange.cli import main

    path = write_export(tmp_path, [lis_row(report="C1"), lis_row(report="C2", result="abc")])
    env = {"HRX_KAFKA_BOOTSTRAP": broker.bootstrap, "HRX_PSEUDONYM_KEY": TEST_KEY.decode(),
           "HRX_VAR_DIR": str(tmp_path / "var")}
    runner = CliRunner()
    result = runner.invoke(main, ["adapter", "csv", str(path), "--institution", "zj-hz-001", "--profile",
                                  "lis-generic-zh"], env=env)
    assert result.exit_code == 1, result.output
    assert f"{path}: line 3: 结果: 'abc' is not a number" in result.stderr
    assert f"{path}: read 2 row(s) in 2 report(s) (utf-8, comma-separated)" in result.stdout
    assert "published 1 report(s) (1 row(s))" in result.stdout
    assert "rejected 1 row(s) in 1 report(s); 1 dead letter(s)" in result.stdout
    assert RID_A not in result.output
    clean = runner.invoke(main, ["adapter", "csv", str(SAMPLE), "--institution", "zj-hz-001", "--profile",
                                 "lis-generic-zh", "--dry-run"], env=env)
    assert clean.exit_code == 0 and "4 report(s) would be published" in clean.stdout
    unknown = runner.invoke(main, ["adapter", "csv", str(SAMPLE), "--institution", "zj-hz-001", "--profile", "nope"],
                            env=env)
    assert unknown.exit_code == 1 and "unknown profile 'nope'" in unknown.stderr


def test_a_terminal_gets_a_progress_bar() -> None:
    stream = io.StringIO()
    with RowProgress(40, "checking rows", stream=stream, tty=True) as update:
        update(15)
        update(25)
    shown = stream.getvalue()
    assert "checking rows" in shown and "40/40" in shown
    assert "10%" not in shown.replace("100%", "")  # the bar, not the plain lines meant for a pipe


@pytest.mark.integration  # runs hrx in a fresh process
def test_help_does_not_load_the_adapter() -> None:
    code = ("import sys; from click.testing import CliRunner; from exchange.cli import main; "
            "result = CliRunner().invoke(main, ['adapter', 'csv', '--help']); "
            "assert result.exit_code == 0 and '--profile' in result.output, result.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'adapters' or m in ('tqdm', 'jsonschema')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # The log guard (and the resident-ID shape it scrubs by) is installed by every command; nothing else.
    assert loaded.strip() == "['adapters', 'adapters.log_guard']", loaded

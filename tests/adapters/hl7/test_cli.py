"""``hrx adapter hl7`` (exchange/cli/adapter_hl7.py): file mode end to end through the real broker, and
``--help`` without loading the adapter."""
from __future__ import annotations

import pytest

import subprocess
import sys

from click.testing import CliRunner

from tests.adapters.hl7.hl7data import BATCH, CHAOYANG, CORRECTION, replace
from tests.fixtures.pseudonyms import TEST_KEY


def test_file_mode_publishes_batches_and_exits_1_on_a_refusal(broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from exchange.cli import main

    env = {"HRX_KAFKA_BOOTSTRAP": broker.bootstrap, "HRX_VAR_DIR": str(tmp_path / "var"),
           "HRX_PSEUDONYM_KEY": TEST_KEY.decode()}
    runner = CliRunner()
    result = runner.invoke(main, ["adapter", "hl7", "--institution", "bj-chaoyang-001", str(BATCH)], env=env)
    assert result.exit_code == 0, result.output
    assert "2 message(s) accepted, 0 refused" in result.output
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(CHAOYANG + replace(CORRECTION, "110105198003120024", "110105198003120021"))
    result = runner.invoke(main, ["adapter", "hl7", "--institution", "bj-chaoyang-001", str(bad)], env=env)
    assert result.exit_code == 1
    assert "1 message(s) accepted, 1 refused" in result.output and "PID^1^3^2" in result.output
    assert "110105198003120021" not in result.output
    assert (tmp_path / "var" / "hl7-acks.db").exists()
    usage = runner.invoke(main, ["adapter", "hl7", "--institution", "bj-chaoyang-001"], env=env)
    assert usage.exit_code == 2


@pytest.mark.integration  # runs hrx in a fresh process
def test_help_does_not_load_the_adapter() -> None:
    """The command imports the adapter (and python-hl7, the code book, the event validators) only to run."""
    script = ("import sys\n"
              "from exchange.cli import main\n"
              "try:\n"
              "    main(['adapter', 'hl7', '--help'])\n"
              "except SystemExit as exit:\n"
              "    assert exit.code == 0, exit.code\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('adapters', 'hl7', 'codes', 'schemas')))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert "--max-bytes" in run.stdout and "--institution" in run.stdout
    # The log guard (and the resident-ID shape it scrubs by) is installed by every command; nothing else.
    assert run.stdout.rstrip().splitlines()[-1] == "['adapters', 'adapters.log_guard', 'schemas', 'schemas.resident_id']"

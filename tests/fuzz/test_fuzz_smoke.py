"""Each fuzzing harness for 30 s (``python -m fuzz --seconds 30 --seed 1 TARGET``, as ``make fuzz`` runs them
for 10 minutes with new seeds): no crash, no hang, and the harness really ran inputs through the adapter.

The seed is fixed so that this smoke test repeats the same mutations on every machine: a crash it finds is
found again, not once in a while. New ground is ``make fuzz``'s (a random seed each run), whose crashes come
back here as regression cases (tests/adapters/*/test_*fuzz_crashes.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from fuzz import TARGETS

ROOT = Path(__file__).resolve().parent.parent.parent
SECONDS = 30

pytestmark = pytest.mark.integration  # a libFuzzer process per target


@pytest.mark.timeout(SECONDS + 240)
@pytest.mark.parametrize("target", TARGETS)
def test_the_harness_runs_its_seconds_without_a_crash(target: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "fuzz", "--seconds", str(SECONDS), "--seed", "1", "--work",
                           str(tmp_path), target],
                          cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 200)
    log = tmp_path / "logs" / f"{target}.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:]) if log.exists() else done.stderr
    assert done.returncode == 0, f"{done.stdout}\n--- last lines of {log} ---\n{tail}"
    [run] = orjson.loads((tmp_path / "summary.json").read_bytes())
    # the seeds alone give coverage; the fuzzer must have gone past them
    assert run["executions"] > 100 and run["coverage"] > 0 and run["new_inputs"] > 0, run
    assert not run["crashes"]

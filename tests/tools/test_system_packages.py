"""tools/system-packages: what `make test` needs from the system is named exactly when it cannot be installed."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "system-packages"

pytestmark = pytest.mark.integration  # runs a shell


def _check(tmp_path: Path, lines: str) -> subprocess.CompletedProcess[str]:
    listed = tmp_path / "packages.txt"
    listed.write_text(lines)
    return subprocess.run([str(SCRIPT), "--check", str(listed)], capture_output=True, text=True, timeout=60)


def test_a_missing_command_names_its_package_and_why(tmp_path: Path) -> None:
    done = _check(tmp_path, "# comment\nsh  dash  the shell\nno-such-command-hrx  hrx-fake-pkg  because the test says\n")
    assert done.returncode == 1
    assert "hrx-fake-pkg — because the test says" in done.stderr
    assert "apt-get install hrx-fake-pkg" in done.stderr
    assert "dash" not in done.stderr


def test_a_missing_font_family_is_named(tmp_path: Path) -> None:
    done = _check(tmp_path, "font:No_Such_Font_Family_HRX  fonts-hrx-fake  Chinese text\n")
    assert done.returncode == 1 and "fonts-hrx-fake" in done.stderr


def test_nothing_missing_says_nothing(tmp_path: Path) -> None:
    done = _check(tmp_path, "sh  dash  the shell\n")
    assert (done.returncode, done.stderr) == (0, "")

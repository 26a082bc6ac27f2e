"""Files of the exchange's processes that hold secrets: the stack file under a permissive umask, and the warning
every process gives at start when the pseudonym key is readable by others (adapters/private_files.py)."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from adapters.private_files import make_private_dir
from adapters.pseudonymize import create_key_file
from exchange.config import Settings
from exchange.stack_file import StackFile, write_stack_file
from tests.fixtures.umask import umask


def test_stack_file_is_private_under_a_permissive_umask(tmp_path: Path) -> None:
    stack = StackFile(pid=os.getpid(), kafka_bootstrap="127.0.0.1:9", database_url="postgresql+psycopg://u:pw@db/h",
                      codes_dir=None, pseudonym_key_file=None, pseudonym_algorithm="sm3",
                      key_id="sm3-0123456789abcdef", api="http://127.0.0.1:8080")
    with umask(0):
        make_private_dir(tmp_path / "var")
        path = write_stack_file(tmp_path / "var", stack)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700


def test_every_process_warns_at_start_when_the_pseudonym_key_is_readable_by_others(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from exchange import runtime

    var = tmp_path / "var"
    create_key_file(var / "pseudonym.key")
    settings = Settings(var_dir=var)
    with caplog.at_level(logging.WARNING):
        runtime.pseudonymizer(settings)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    os.chmod(var / "pseudonym.key", 0o640)
    with caplog.at_level(logging.WARNING):
        runtime.pseudonymizer(settings)  # warned, not refused: a group-readable key may be deliberate
    assert any("pseudonym key" in r.getMessage() and "mode 0640: group can read it" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING), caplog.text

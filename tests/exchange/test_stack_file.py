"""``var/stack.json`` (exchange/stack_file.py): processes started beside ``hrx up`` find its broker, store, codes
and key; their environment wins; a file left by a process that is gone is ignored."""
from __future__ import annotations

import pytest

import os
import stat
import subprocess
import sys
from pathlib import Path

from exchange.config import Settings
from exchange.stack_file import StackFile, read_stack_file, remove_stack_file, stack_file_path, write_stack_file


def _stack(tmp_path: Path, pid: int) -> StackFile:
    return StackFile(pid=pid, kafka_bootstrap="127.0.0.1:19092", database_url=f"sqlite:///{tmp_path}/hrx.db",
                     codes_dir=str(tmp_path / "codes"), pseudonym_key_file=str(tmp_path / "var" / "pseudonym.key"),
                     pseudonym_algorithm="sm3", key_id="sm3-0123456789abcdef", api="http://127.0.0.1:8080")


def test_settings_fill_what_the_environment_leaves_open(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    stack = _stack(tmp_path, os.getpid())
    path = write_stack_file(var, stack)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    found = Settings.from_env({"HRX_VAR_DIR": str(var)})
    assert found.stack == stack
    assert (found.kafka_bootstrap, found.database_url, found.codes_dir, found.pseudonym_key_file,
            found.pseudonym_algorithm) == ("127.0.0.1:19092", stack.database_url, tmp_path / "codes",
                                           var / "pseudonym.key", "sm3")
    # The environment wins, setting by setting.
    own = Settings.from_env({"HRX_VAR_DIR": str(var), "HRX_KAFKA_BOOTSTRAP": "kafka:9092", "HRX_CODES_DIR": "/c",
                             "HRX_DATABASE_URL": "postgresql+psycopg://db/hrx", "HRX_PSEUDONYM_ALGORITHM": "sha256",
                             "HRX_PSEUDONYM_KEY_FILE": "/run/secrets/key"})
    assert (own.kafka_bootstrap, own.database_url, own.codes_dir, own.pseudonym_key_file,
            own.pseudonym_algorithm) == ("kafka:9092", "postgresql+psycopg://db/hrx", Path("/c"),
                                         Path("/run/secrets/key"), "sha256")
    inline = Settings.from_env({"HRX_VAR_DIR": str(var), "HRX_PSEUDONYM_KEY": "k" * 32})
    assert inline.pseudonym_key_file is None and inline.pseudonym_key == b"k" * 32
    assert Settings.from_env({"HRX_VAR_DIR": str(var)}, stack=False).kafka_bootstrap is None  # `hrx up` itself
    assert Settings.from_env({"HRX_VAR_DIR": str(tmp_path / "elsewhere")}).stack is None


@pytest.mark.integration  # starts a process to stop it
def test_a_stack_file_of_a_stopped_process_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    write_stack_file(tmp_path, _stack(tmp_path, int(gone.stdout)))
    assert read_stack_file(tmp_path) is None
    assert Settings.from_env({"HRX_VAR_DIR": str(tmp_path)}).kafka_bootstrap is None


def test_only_the_writer_removes_the_file(tmp_path: Path) -> None:
    write_stack_file(tmp_path, _stack(tmp_path, os.getpid()))
    remove_stack_file(tmp_path, os.getpid() + 1)
    assert stack_file_path(tmp_path).exists()
    remove_stack_file(tmp_path, os.getpid())
    assert not stack_file_path(tmp_path).exists()
    stack_file_path(tmp_path).write_text("{not json")
    assert read_stack_file(tmp_path) is None

"""Secrets readable by the service user only (adapters/private_files.py): the mode is given at creation, so even a
permissive umask leaves the key file 0600 and its directory 0700; a key readable by others is reported."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from adapters.private_files import make_private_dir, readable_by_others, warn_if_readable_by_others
from adapters.pseudonymize import create_key_file
from tests.fixtures.umask import umask


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_file_and_the_directories_it_creates_are_private_under_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "var" / "pseudonym.key"
    with umask(0):
        create_key_file(path)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)  # whatever the test runner's umask
    make_private_dir(shared)
    assert _mode(shared) == 0o755


@pytest.mark.parametrize(("mode", "expected"), [
    (0o600, None), (0o400, None), (0o620, None),  # written by the group, but not read: not a leak
    (0o640, "mode 0640: group can read it"),
    (0o604, "mode 0604: others can read it"),
    (0o644, "mode 0644: group and others can read it"),
])
def test_readable_by_others(mode: int, expected: str | None, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"x")
    os.chmod(path, mode)
    assert readable_by_others(path) == expected


def test_a_key_readable_by_others_is_warned_about_and_a_private_one_is_not(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tls.key"
    path.write_bytes(b"x")
    os.chmod(path, 0o600)
    with caplog.at_level(logging.WARNING):
        warn_if_readable_by_others(path, "TLS key")
    assert not caplog.records
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        warn_if_readable_by_others(path, "TLS key")
    assert [r.getMessage() for r in caplog.records] == [
        f"TLS key {path} has mode 0644: group and others can read it; only the service user should "
        f"(chmod 600 {path})"]

"""Shared fixtures: the shipped code book and writable copies of the shipped data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codes import CodeBook, load_codebook
from codes.book import SHIPPED_DIR


@pytest.fixture(scope="session")
def book() -> CodeBook:
    """The shipped demo code book (loaded once)."""
    return load_codebook(SHIPPED_DIR)


@pytest.fixture()
def data_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped data directory."""
    dest = tmp_path / "data"
    shutil.copytree(SHIPPED_DIR, dest)
    return dest

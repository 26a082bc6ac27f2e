"""Fixtures of the exchange's tests: the controlled code world of the recognition rules."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codes import CodeBook, default_codes_dir, load_codebook

WORLD = Path(__file__).parents[1] / "data" / "codes-world"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> CodeBook:
    """The shipped items, regions and divisions, with the test world's institutions and catalogues."""
    root = tmp_path_factory.mktemp("world")
    shipped = default_codes_dir()
    for name in ("items.csv", "prices.csv", "regions.yaml", "divisions.csv", "aliases.csv", "imaging_aliases.csv",
                 "reason_codes.csv"):
        shutil.copy(shipped / name, root / name)
    shutil.copytree(WORLD, root, dirs_exist_ok=True)
    (root / "mappings").mkdir()
    return load_codebook(root)

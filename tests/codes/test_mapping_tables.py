"""A new mapping row becomes the institution's next table version; a refused one leaves nothing behind."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codes import default_codes_dir, load_codebook
from codes.loader import version_key
from codes.mapping_tables import MappingRefused, NewRow, add_mapping, next_version


@pytest.mark.parametrize("current", ["v1", "v9", "2024-07", "2024-12-v3", "v009", "alpha"])
def test_the_next_version_sorts_after_the_current_one(current: str) -> None:
    assert version_key(next_version(current)) > version_key(current)
    assert next_version(None) == "v1"


@pytest.fixture
def codes(tmp_path: Path) -> Path:
    root = tmp_path / "codes"
    shutil.copytree(default_codes_dir(), root)
    return root


def test_a_row_for_an_institution_without_a_table_starts_v1(codes: Path) -> None:
    bare = "zj-tonglu-002"
    shutil.rmtree(codes / "mappings" / bare)
    book = load_codebook(codes)
    added = add_mapping(book, bare, NewRow("X-GLU", "L0032", system="http://loinc.org/not-loinc-really",
                                           note="a note, with a comma"))
    assert (added.version, added.previous_version) == ("v1", None)
    assert added.book.map_code(bare, "X-GLU", "http://loinc.org/not-loinc-really").unified_code == "L0032"
    assert added.path.read_text("utf-8").splitlines()[0].startswith("system,local_code")


def test_a_loinc_row_and_a_duplicate(codes: Path) -> None:
    book = load_codebook(codes)
    added = add_mapping(book, "bj-chaoyang-001", NewRow("2345-7", "L0032", system="http://loinc.org",
                                                        source_unit="mg/dL", factor=0.05551))
    mapped = added.book.map_code("bj-chaoyang-001", "2345-7", "http://loinc.org")
    assert (mapped.unified_code, mapped.factor, mapped.table_version) == ("L0032", 0.05551, added.version)
    with pytest.raises(MappingRefused) as refused:
        add_mapping(added.book, "bj-chaoyang-001", NewRow("2345-7", "L0001", system="LN"))
    assert refused.value.conflict and refused.value.field == "local_code"


def test_a_refused_row_writes_nothing(codes: Path) -> None:
    book = load_codebook(codes)
    folder = codes / "mappings" / "bj-chaoyang-001"
    before = sorted(p.name for p in folder.iterdir())
    for row in (NewRow("Q", "L0032", source_unit="mg/dL"), NewRow("Q", "L0032", factor=0.0),
                NewRow("Q", "L0032", system="LN")):  # no factor; factor 0; not a LOINC code (check digit)
        with pytest.raises(MappingRefused):
            add_mapping(book, "bj-chaoyang-001", row)
        assert sorted(p.name for p in folder.iterdir()) == before


def test_the_shipped_data_is_not_edited(book) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MappingRefused, match="HRX_CODES_DIR"):
        add_mapping(book, "bj-chaoyang-001", NewRow("Q", "L0032"))

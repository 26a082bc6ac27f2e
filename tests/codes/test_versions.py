"""Version selection: effective_from inclusive, effective_to exclusive, to the second."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from codes import load_codebook


SH = ZoneInfo("Asia/Shanghai")


def make(data_copy, name, version, eff_from, eff_to):
    write(data_copy / "catalogues" / name,
          f"id: t\ntier: province\nscope: \"330000\"\nauthority: a\nversion: \"{version}\"\n"
          f"effective_from: {eff_from}\neffective_to: {eff_to}\nitems:\n  - {{code: L0001, valid_days: {version}}}\n")


def versions_at(book, at):
    return [c.version for c in book.catalogues_in_force(at) if c.id == "t"]


def test_boundaries_to_the_second(data_copy):
    make(data_copy, "t1.yaml", "1", "2024-01-01", "2025-01-01")
    make(data_copy, "t2.yaml", "2", "2025-01-01", "null")
    book = load_codebook(data_copy)
    boundary = datetime(2025, 1, 1, 0, 0, 0, tzinfo=SH)
    assert versions_at(book, boundary - timedelta(seconds=1)) == ["1"]
    assert versions_at(book, boundary) == ["2"]
    assert versions_at(book, datetime(2024, 1, 1, tzinfo=SH)) == ["1"]
    assert versions_at(book, datetime(2024, 1, 1, tzinfo=SH) - timedelta(seconds=1)) == []
    # the same instants in UTC select the same versions (dates mean midnight Beijing time)
    assert versions_at(book, datetime(2024, 12, 31, 15, 59, 59, tzinfo=timezone.utc)) == ["1"]
    assert versions_at(book, datetime(2024, 12, 31, 16, 0, 0, tzinfo=timezone.utc)) == ["2"]
    # naive datetimes are read as Asia/Shanghai
    assert versions_at(book, datetime(2025, 1, 1)) == ["2"]
    assert versions_at(book, datetime(2099, 1, 1)) == ["2"]
    cat = next(c for c in book.catalogues_in_force(boundary) if c.id == "t")
    assert cat.item("L0001").valid_days == 2
    assert cat.effective_from.tzinfo is not None


def test_datetime_boundaries_in_file(data_copy):
    make(data_copy, "t1.yaml", "1", "2024-01-01", "2024-07-01 08:30:00+08:00")
    make(data_copy, "t2.yaml", "2", "2024-07-01 08:30:00+08:00", "null")
    book = load_codebook(data_copy)
    edge = datetime(2024, 7, 1, 8, 30, tzinfo=SH)
    assert versions_at(book, edge - timedelta(seconds=1)) == ["1"]
    assert versions_at(book, edge) == ["2"]


def test_shipped_two_versions(book):
    old = versions_at_id(book, "zj-province", datetime(2023, 12, 31, 23, 59, 59, tzinfo=SH))
    new = versions_at_id(book, "zj-province", datetime(2024, 1, 1, tzinfo=SH))
    assert (old, new) == (["2021"], ["2024"])
    assert len(book.catalogue_versions("jjj-lab")) == 2


def versions_at_id(book, cid, at):
    return [c.version for c in book.catalogues_in_force(at) if c.id == cid]


def write(path, text):
    """Write UTF-8 text, creating parents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path

"""`hrx up --demo` runs on its own copy of the shipped code data (which is never edited), made once."""
from __future__ import annotations

from pathlib import Path

from codes import load_codebook
from codes.book import is_shipped
from codes.loader import SHIPPED_DIR
from exchange.up import demo_codes_dir


def test_the_demo_copies_the_shipped_codes_once_and_keeps_what_an_operator_added(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    copy = demo_codes_dir(var)
    assert copy == var / "codes" and not is_shipped(copy)
    shipped = sorted(p.relative_to(SHIPPED_DIR) for p in SHIPPED_DIR.rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    assert sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file()) == shipped
    assert load_codebook(copy).institutions == load_codebook(SHIPPED_DIR).institutions
    added = copy / "institutions.yaml"
    added.write_text(added.read_text(encoding="utf-8") + "\n# an operator's edit\n", encoding="utf-8")
    assert demo_codes_dir(var) == copy  # a second start keeps the copy, edits and all
    assert added.read_text(encoding="utf-8").endswith("# an operator's edit\n")
    assert not list(var.glob(".codes.partial-*"))

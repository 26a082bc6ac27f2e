"""item_bounds.csv: validated with file:line, loaded into the code book, filled for the shipped lab analytes,
and checked by codes.bounds.out_of_bounds in the item's unit (comparators checked for what they claim)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from codes import CodeError, load_codebook
from codes.book import SHIPPED_DIR
from codes.bounds import out_of_bounds
from codes.loader import load_dir

GLUCOSE, HBA1C, PH, ANION_GAP, LEUKOCYTES = "L0032", "L0033", "L0075", "L0058", "L0165"


def _rows() -> list[dict[str, str]]:
    lines = (SHIPPED_DIR / "item_bounds.csv").read_text(encoding="utf-8").splitlines()
    return list(csv.DictReader(line for line in lines if not line.startswith("#")))


def test_shipped_bounds_are_physical_and_in_each_items_unit(book) -> None:  # type: ignore[no-untyped-def]
    rows = _rows()
    assert len(rows) == len(book.bounds) > 150
    for row in rows:
        item = book.items[row["code"]]
        bound = book.bounds[row["code"]]
        assert item.kind == "lab_analyte" and bound.unit == item.unit
        if item.unit == "%" and bound.max is not None:  # fractions of a whole
            assert (bound.min, bound.max) == (0, 100)
        elif item.unit == "[pH]":
            assert (bound.min, bound.max) == (0, 14)
        else:  # concentrations, counts, masses, activities, times: not negative, no upper limit
            assert (bound.min, bound.max) == (0, None), row
    percent = {code for code, item in book.items.items() if item.unit == "%"}
    assert {HBA1C, "L0168", "L0179"} <= percent and book.bounds["L0168"].max == 100
    assert book.bounds["L0207"].max is None  # factor VIII activity: % of normal, often above 100
    assert ANION_GAP not in book.bounds  # can be negative
    quantitative = {code for code, item in book.items.items() if item.kind == "lab_analyte" and item.unit}
    assert quantitative - set(book.bounds) == {ANION_GAP, "L0262"}


@pytest.mark.parametrize("code, value, unit, comparator, refused", [
    (GLUCOSE, 5.6, "mmol/L", None, None),
    (GLUCOSE, 0.0, "mmol/L", None, None),
    (GLUCOSE, -0.1, "mmol/L", None, "smallest possible value is 0"),
    (GLUCOSE, -5.0, "mg/dL", None, None),  # not in the item's unit: not comparable, not checked here
    (GLUCOSE, 0.0, "mmol/L", "<", "smallest possible value is 0"),  # "<0": below 0
    (GLUCOSE, 0.0, "mmol/L", "<=", None),
    (GLUCOSE, -1.0, "mmol/L", ">", None),  # "> -1" is possible
    (HBA1C, 100.0, "%", None, None),
    (HBA1C, 100.5, "%", None, "largest possible value is 100"),
    (HBA1C, 100.0, "%", ">", "largest possible value is 100"),
    (HBA1C, 100.0, "%", ">=", None),
    (HBA1C, 200.0, "%", "<", None),  # "<200 %" is possible
    (PH, 14.2, "[pH]", None, "largest possible value is 14"),
    (PH, 7.4, "[pH]", None, None),
    (ANION_GAP, -3.0, "mmol/L", None, None),  # no bounds
    (LEUKOCYTES, -0.01, "10*9/L", None, "smallest possible value is 0"),
])
def test_out_of_bounds(book, code, value, unit, comparator, refused) -> None:  # type: ignore[no-untyped-def]
    why = out_of_bounds(book, code, value, unit, comparator)
    if refused is None:
        assert why is None
    else:
        assert refused in why and code in why and book.items[code].name_zh in why


def test_bounds_are_optional(data_copy: Path) -> None:
    (data_copy / "item_bounds.csv").unlink()
    book = load_codebook(data_copy)
    assert book.bounds == {} and out_of_bounds(book, GLUCOSE, -1.0, "mmol/L") is None


def test_bounds_problems_with_lines(data_copy: Path) -> None:
    path = data_copy / "item_bounds.csv"
    path.write_text("\n".join([
        "code,min,max,unit",
        "L9999,0,,mmol/L",      # 2 unknown item
        "L0265,0,,",            # 3 a panel
        "L0032,0,,mg/dL",       # 4 not the item's unit
        "L0045,abc,,mmol/L",    # 5 not a number
        "L0046,1e999,,mmol/L",  # 6 not a plain finite decimal
        "L0033,100,0,%",        # 7 min not below max
        "L0037,,,mmol/L",       # 8 neither bound
        "L0038,0,,mmol/L",
        "L0038,0,,mmol/L",      # 10 duplicate
        "L0075,0,14,[pH]",
    ]) + "\n", encoding="utf-8")
    data, problems = load_dir(data_copy)
    got = {p.line: p.message for p in problems if Path(p.file).name == "item_bounds.csv"}
    assert "unknown item code 'L9999'" in got[2]
    assert "only lab analytes" in got[3]
    assert "not the item's unit mmol/L" in got[4]
    assert "'abc' is not a finite decimal number" in got[5]
    assert "'1e999' is not a finite decimal number" in got[6]
    assert "min 100 is not below max 0" in got[7]
    assert "give min, max or both" in got[8]
    assert "duplicate bounds for L0038 (first on line 9)" in got[10]
    assert set(got) == {2, 3, 4, 5, 6, 7, 8, 10}
    assert set(data.bounds) == {"L0038", "L0075"}  # the valid rows are still read
    with pytest.raises(CodeError) as exc:
        load_codebook(data_copy)
    assert "item_bounds.csv:4:" in str(exc.value)


def test_bounds_columns_are_checked(data_copy: Path) -> None:
    path = data_copy / "item_bounds.csv"
    path.write_text("code,min,maximum\nL0032,0,\n", encoding="utf-8")
    _, problems = load_dir(data_copy)
    assert any(p.line == 1 and "missing column(s): max, unit" in p.message for p in problems)

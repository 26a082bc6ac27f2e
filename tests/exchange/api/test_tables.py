"""Tables as CSV and Excel: Chinese that Excel reads, numbers as numbers, and no cell that runs as a formula."""
from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from exchange.api.tables import Table, to_csv, to_xlsx

ROWS = [{"name": "北京市示例朝阳医院", "n": 3, "rate": 0.25, "none": None, "dangerous": "=HYPERLINK(\"x\")",
         "minus": "-2+3", "nested": {"06": 1}},
        {"name": "plain", "n": 0, "rate": None, "none": None, "dangerous": "@SUM(A1)", "minus": "\tx",
         "nested": ["a"]}]
TABLE = Table("t", ["name", "n", "rate", "none", "dangerous", "minus", "nested"], ROWS)


def test_csv_has_a_bom_and_never_a_formula() -> None:
    data = to_csv(TABLE)
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0]["name"] == "北京市示例朝阳医院" and rows[0]["n"] == "3" and rows[0]["none"] == ""
    assert [r["dangerous"] for r in rows] == ["'=HYPERLINK(\"x\")", "'@SUM(A1)"]
    assert [r["minus"] for r in rows] == ["'-2+3", "'\tx"]
    assert rows[0]["nested"] == '{"06":1}'


def test_xlsx_keeps_numbers_and_writes_formulas_as_text() -> None:
    sheet = load_workbook(io.BytesIO(to_xlsx(TABLE))).active
    values = list(sheet.values)
    assert values[0] == tuple(TABLE.columns)
    assert values[1][:4] == ("北京市示例朝阳医院", 3, 0.25, None)
    assert sheet.cell(row=2, column=5).data_type == "s" and sheet.cell(row=2, column=5).value == '=HYPERLINK("x")'
    assert sheet.cell(row=3, column=5).data_type == "s"

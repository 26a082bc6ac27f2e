"""Importing a published list (GBK or UTF-8 CSV): name matching and unmatched-row reporting."""

from __future__ import annotations

import csv
import io
from datetime import date

from click.testing import CliRunner

from codes.cli import catalogue
from codes.importer import import_published, parse_days
from codes.tools import validate

PUBLISHED = """浙江省示例检验检查结果互认项目清单,,,
序号,项目名称,互认时限,备注
一、临床化学,,,
1,谷丙转氨酶,7天,
2,天门冬氨酸氨基转移酶（AST）,7天,全角括号
3,总 胆 固 醇(TC),1个月,
4,糖化血红蛋白,60,
5,钾,7日,
6,超导量子检测,7天,
7,钾(K),7天,
8,甘油三酯,很快,
9,ＣＴ颅脑平扫,6个月,全角字母
10,血常规,7天,
11,,,
12,未知新项目(XYZ),30,
"""


def write_gbk(tmp_path, text=PUBLISHED):
    path = tmp_path / "published.csv"
    path.write_bytes(text.encode("gbk"))
    return path


def test_gbk_import(book, tmp_path):
    path = write_gbk(tmp_path)
    yaml_text, unmatched = import_published(path, "province", "330000", book, catalogue_id="zj-import",
                                            authority="浙江省卫生健康委员会", version="2025", effective_from=date(2025, 1, 1))
    reasons = {u.line: u.reason for u in unmatched}
    assert "before the header row" in reasons[1]
    assert "section heading" in reasons[3]
    assert "no unified item" in reasons[9]  # 超导量子检测
    assert "duplicate of line 8" in reasons[10]  # 钾(K) after 钾
    assert "cannot read validity" in reasons[11]
    assert "empty item name" in reasons[14]
    assert "no unified item" in reasons[15]
    assert len(unmatched) == 7
    code = {k: book.item_by_loinc(k).code for k in ("1742-6", "1920-8", "14647-2", "4548-4", "2823-3")}
    assert f"code: {code['1742-6']}, valid_days: 7" in yaml_text  # via alias 谷丙转氨酶
    assert f"code: {code['1920-8']}, valid_days: 7" in yaml_text  # full-width parentheses
    assert f"code: {code['14647-2']}, valid_days: 30" in yaml_text  # spaces + month
    assert f"code: {code['4548-4']}, valid_days: 60" in yaml_text
    ct = book.imaging_item("CT", "HEAD", "plain")
    assert f"code: {ct.code}, valid_days: 180" in yaml_text  # full-width letters
    cbc = next(i for i in book.items.values() if i.loinc == "57021-8")
    assert f"code: {cbc.code}" in yaml_text
    out = tmp_path / "zj-import.yaml"
    out.write_text(yaml_text, encoding="utf-8")
    assert validate([out]) == []


def test_utf8_with_bom_and_code_column(book, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("互认编码,检验项目名称,有效期(天)\nL0032,某个名字,30\n,尿素,14\n", encoding="utf-8-sig")
    yaml_text, unmatched = import_published(path, "city", "330100", book)
    assert unmatched == []
    assert "code: L0032, valid_days: 30" in yaml_text and "valid_days: 14" in yaml_text


def test_no_header(book, tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    _, unmatched = import_published(path, "city", "330100", book)
    assert [u.line for u in unmatched] == [1, 2, 0]


def test_parse_days():
    assert [parse_days(t) for t in ("7", "7天", "7日", "2周", "3个月", "1年", "x")] == [7, 7, 7, 14, 90, 365, None]


def test_cli_import_reports_rows(tmp_path):
    path = write_gbk(tmp_path)
    out = tmp_path / "out.yaml"
    res = CliRunner().invoke(catalogue, ["import", str(path), "--tier", "province", "--scope", "330000",
                                         "--authority", "浙江省卫生健康委员会", "-o", str(out)], obj={})
    assert res.exit_code == 1  # some rows were not imported
    assert f"{path}:9: 超导量子检测" in res.output
    assert "7 行未导入" in res.output
    assert out.read_text(encoding="utf-8").count("  - {code:") == 7


def test_an_excel_list_imports_as_its_csv_does_with_sheet_row_numbers(book, tmp_path):
    from openpyxl import Workbook

    sheet_book = Workbook()
    for row in csv.reader(io.StringIO(PUBLISHED)):
        sheet_book.active.append([int(c) if c.isdigit() else (c or None) for c in row])
    sheet_book.save(tmp_path / "list.xlsx")
    (tmp_path / "list.csv").write_text(PUBLISHED, encoding="utf-8")
    from_excel = import_published(tmp_path / "list.xlsx", "province", "330000", book, effective_from=date(2025, 1, 1))
    from_csv = import_published(tmp_path / "list.csv", "province", "330000", book, effective_from=date(2025, 1, 1))
    assert from_excel.unmatched == from_csv.unmatched and from_excel.unmatched
    assert from_excel.yaml_text.split("\n", 1)[1] == from_csv.yaml_text.split("\n", 1)[1]  # the first line names the file

"""Reading export files: encodings (GBK, GB18030, UTF-8 with BOM), delimiter detection, a title line above the
header, quoted newlines and blank lines keeping physical line numbers."""
from __future__ import annotations

import pytest

from adapters.pipeline import ResultPipeline
from schemas.topics import TOPIC_DEADLETTER, TOPIC_LAB
from tests.adapters.csv.csvdata import HEADER_ZH, RID_A, RID_B, lis_row, run_import, write_export


def test_gbk_tab_export_with_the_detail_profile(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    header = ["证件号码", "病人姓名", "性别", "出生日期", "检验单号", "报告版本", "组合代码", "组合名称", "检验项目代码",
              "检验项目", "LOINC", "结果类型", "结果值", "结果单位", "参考下限", "参考上限", "结果提示", "审核状态",
              "采集时间", "审核时间"]
    common = [RID_A, "钱七", "男", "1970/01/01", "XC-0001", "4", "BJXCBLD-CBC", "血常规"]
    rows = [
        common + ["BJXCGLU", "葡萄糖", "", "数值", "99", "mg/dL", "70", "110", "", "已审核",
                  "2025/03/02 07:05", "2025/03/02 09:30"],
        common + ["BJXCK", "钾", "", "数值", "4.1", "mmol/L", "3.5", "5.3", "", "已审核",
                  "2025/03/02 07:05", "2025/03/02 09:45"],
        common + ["X-UNKNOWN", "红细胞形态", "", "文本", "正常", "", "", "", "", "已审核",
                  "2025/03/02 07:05", "2025/03/02 09:40"],
    ]
    path = write_export(tmp_path, rows, header=header, sep="\t", encoding="gbk", name="export.tsv")
    summary = run_import(path, pipeline, institution="bj-xicheng-001", profile="lis-detail-zh")
    assert (summary.encoding, summary.delimiter, summary.exit_code) == ("gb18030", "\t", 0)
    [event] = recorder.events(TOPIC_LAB)
    assert (event["version"], event["status"]) == (4, "final")  # the version column wins over the status rank
    assert event["item"]["unified_code"] == "L0263"  # the panel is the report's item
    assert event["reported_at"] == "2025-03-02T09:45:00+08:00" and event["patient"]["birth_year"] == 1970
    glucose, potassium, morphology = event["observations"]
    # mg/dL → mmol/L through the hospital's mapping table, bounds from the two range columns converted too
    assert glucose["unit"] == "mmol/L" and glucose["value"] == pytest.approx(99 * 0.05551)
    assert glucose["original"]["value"] == 99 and glucose["original"]["unit"] == "mg/dL"
    assert glucose["original"]["reference_range"]["low"] == 70  # kept as sent, for re-mapping later
    assert glucose["reference_range"]["low"] == pytest.approx(70 * 0.05551)
    assert potassium["item"]["unified_code"] == "L0045"
    assert morphology["item"]["unified_code"] is None and morphology["value_text"] == "正常"
    assert "钱七" not in recorder.text()


def test_gb18030_only_characters_and_an_explicit_gbk_refusal(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    rare = "𠮷"  # outside GBK: four bytes in GB18030
    rows = [lis_row(name=f"{rare}祥", report="R1"), lis_row(report="R2", code="K", result="4.0", item=f"钾{rare}")]
    path = write_export(tmp_path, rows, sep="\t", encoding="gb18030")
    summary = run_import(path, pipeline)
    assert (summary.encoding, summary.delimiter, summary.exit_code) == ("gb18030", "\t", 0)
    assert summary.published_reports == 2
    assert recorder.events(TOPIC_LAB)[1]["observations"][0]["item"]["local_name"] == f"钾{rare}"
    assert f"{rare}祥" not in recorder.text()
    refused = run_import(path, ResultPipeline(pipeline.book, pipeline.pseudonymizer), encoding="gbk")
    assert refused.exit_code == 1 and refused.refused and "line 2" in refused.refused
    assert "gb18030" in refused.refused


def test_english_profile_utf8_bom_semicolon_and_a_title_line(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    header = ["Resident ID", "Patient Name", "Sex", "Date of Birth", "Report No", "Test Code", "Test Name", "Result",
              "Units", "Ref Range", "Flag", "Status", "Collected", "Reported"]
    rows = [[RID_B, "Jane Roe", "F", "1992-11-11", "EN-1", "CRP", "C-reactive protein", "12.5", "mg/L", "0-10", "H",
             "F", "2025-03-03 08:00", "2025-03-03T11:00:00+08:00"],
            [RID_B, "Jane Roe", "F", "1992-11-11", "EN-1", "HBSAG", "HBsAg", "NEG", "", "NEG", "N", "F",
             "2025-03-03 08:00", "2025-03-03 11:05"]]
    path = tmp_path / "en.csv"
    text = "LIS export 2025-03-03\r\n" + "\r\n".join(";".join(r) for r in [header, *rows]) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    summary = run_import(path, pipeline, profile="lis-generic-en")
    assert (summary.encoding, summary.delimiter, summary.rows, summary.exit_code) == ("utf-8-sig", ";", 2, 0)
    [event] = recorder.events(TOPIC_LAB)
    assert event["reported_at"] == "2025-03-03T11:05:00+08:00"
    assert [o["item"]["unified_code"] for o in event["observations"]] == ["L0061", "L0144"]
    assert "Jane Roe" not in recorder.text()


def test_quoted_newlines_blank_lines_and_trailing_delimiters_keep_line_numbers(tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    quoted = lis_row(report="Q1", result="阳性", unit="", ref="")
    quoted[6] = '"多行\n项目名称"'
    rows = [",".join(quoted), "", ",".join(lis_row(report="Q2")) + ",", ",".join(lis_row(report="Q3", result="x"))]
    summary = run_import(write_export(tmp_path, rows), pipeline)
    assert summary.rows == 3 and [p.line for p in summary.problems] == [6, 6]  # header 1, Q1 2-3, blank 4, Q2 5


@pytest.mark.parametrize("header", [
    [h + "\x00" if h == "姓名" else h for h in HEADER_ZH],  # in a column the profile does not read
    [*HEADER_ZH, "\x00\x00"],                              # after the last column
    [h.replace("报告单号", "报告\x00单号") for h in HEADER_ZH],  # in a required column: no header matches
])
def test_a_header_row_with_nul_characters_refuses_the_file(tmp_path, pipeline, recorder, header) -> None:  # type: ignore[no-untyped-def]
    rows = [lis_row(report="N1")]
    path = write_export(tmp_path, [r + [""] * (len(header) - len(r)) for r in rows], header=header,
                        preamble="LIS export\r\n")
    summary = run_import(path, pipeline)
    assert summary.exit_code == 1 and summary.refused is not None, summary.lines()
    assert summary.refused.startswith("line 2: the header row contains NUL characters"), summary.refused
    assert recorder.events(TOPIC_LAB) == []
    [letter] = recorder.events(TOPIC_DEADLETTER)
    assert letter["origin"]["line"] == 2 and "\x00" not in letter["error"]


def test_utf16_without_a_byte_order_mark_is_refused_with_a_hint(tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    path = write_export(tmp_path, [lis_row()], encoding="utf-16-le")
    summary = run_import(path, pipeline, encoding="latin-1")
    assert summary.refused and "NUL characters" in summary.refused and "--encoding utf-16" in summary.refused
    assert run_import(path, pipeline, encoding="utf-16-le").exit_code == 0

"""Rows into reports: grouping by report number and version, one report number for one patient, a misaligned
row kept out of every message."""
from __future__ import annotations

from schemas import events
from schemas.topics import TOPIC_LAB
from tests.adapters.csv.csvdata import (RID_A, RID_B, SAMPLE, SAMPLE_IDS, SAMPLE_NAMES, lis_row, run_import,
                                        write_export)


def test_shipped_utf8_comma_export_becomes_reports(pipeline, recorder, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    summary = run_import(SAMPLE, pipeline)
    assert (summary.encoding, summary.delimiter, summary.rows, summary.reports) == ("utf-8", ",", 7, 4)
    assert (summary.published_reports, summary.published_rows, summary.rejected_rows) == (4, 7, 0)
    assert summary.exit_code == 0 and not summary.problems
    lab = {e["result_id"]: e for e in recorder.events(TOPIC_LAB)}
    for event in lab.values():
        events.validate("lab-result.v1", event)
        assert event["source"]["adapter"] == "csv" and event["issuer"] == "zj-hz-001"
        assert event["reported_at"].endswith("+08:00")
    liver = lab["HZ20250301-0001"]
    assert (liver["version"], liver["status"]) == (2, "final")
    assert liver["patient"] == {"pseudonym": pseudonymizer.pseudonym(SAMPLE_IDS[0]), "key_id": pseudonymizer.key_id,
                                "sex": "female", "birth_year": 1985}
    alt, ast = liver["observations"]
    assert alt["item"]["unified_code"] == "L0001" and alt["value"] == 56 and alt["interpretation"] == "H"
    assert alt["reference_range"] == {"low": 7, "high": 40, "text": "7-40"}
    assert ast["item"]["unified_code"] == "L0002" and ast["interpretation"] is None
    assert liver["collected_at"] == "2025-03-01T07:30:00+08:00"
    assert lab["HZ20250301-0002"]["item"]["unified_code"] == "L0032"  # a one-row report is that item's result
    corrected = lab["HZ20250301-0003"]
    assert (corrected["version"], corrected["status"]) == (3, "corrected")
    k, na, hbsag = corrected["observations"]
    assert k["interpretation"] == "L" and hbsag["value_type"] == "text" and hbsag["value_text"] == "阴性"
    assert hbsag["reference_range"] == {"low": None, "high": None, "text": "阴性"}
    tc = lab["HZ20250301-0004"]["observations"][0]
    assert (tc["value"], tc["comparator"], tc["reference_range"]["high"]) == (0.5, "<", 5.2)
    published = recorder.text()
    assert not any(rid in published for rid in SAMPLE_IDS)
    assert not any(name in published for name in SAMPLE_NAMES)  # 姓名 is never read


def test_rows_group_by_report_number_not_by_position(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    rows = [lis_row(report="A", code="GLU"), lis_row(report="B", code="K", result="4"),
            lis_row(report="A", code="NA", result="140"),
            lis_row(report="A", code="GLU", status="初步", reported="2025-03-01 09:00:00")]
    summary = run_import(write_export(tmp_path, rows), pipeline)
    assert (summary.rows, summary.reports, summary.published_reports) == (4, 3, 3)
    versions = {(e["result_id"], e["version"], e["status"]): len(e["observations"]) for e in recorder.events(TOPIC_LAB)}
    assert versions == {("A", 2, "final"): 2, ("B", 2, "final"): 1, ("A", 1, "preliminary"): 1}


def test_one_report_number_for_two_patients_rejects_both(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    rows = [lis_row(report="S1"), lis_row(report="S1", rid=RID_B, code="K", result="4")]
    summary = run_import(write_export(tmp_path, rows), pipeline)
    assert summary.published_reports == 0 and summary.rejected_rows == 2
    assert "line 3: report number S1 already belongs to another patient (line 2)" in [str(p) for p in summary.problems]
    assert RID_B not in "\n".join(map(str, summary.problems))


def test_a_misaligned_row_never_lends_a_cell_to_a_message(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    shifted = ",".join([RID_A, "周八", "女", "1985-03-12", "周八"] + lis_row()[5:-1])  # name in the report-number column
    summary = run_import(write_export(tmp_path, [lis_row(report="G1"), shifted]), pipeline)
    assert summary.published_reports == 1 and summary.rejected_rows == 1
    assert [str(p) for p in summary.problems] == ["line 3: wrong column count: expected 14, got 13"]
    assert "周八" not in recorder.text()

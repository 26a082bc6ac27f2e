"""One row → an observation: the reference-range text split by the profile's separators."""
from __future__ import annotations

import pytest

from schemas.topics import TOPIC_DEADLETTER, TOPIC_LAB
from tests.adapters.csv.csvdata import lis_row, run_import, write_export


@pytest.mark.parametrize("ref, low, high", [
    ("3.5-5.3", 3.5, 5.3), ("3.5 ~ 5.3", 3.5, 5.3), ("３．５～５．３", 3.5, 5.3), ("-3-3", -3, 3), ("3.5至5.3", 3.5, 5.3),
    ("<5.2", None, 5.2), ("≤5.2", None, 5.2), (">=40", 40, None), ("阴性", None, None), ("5.3-3.5", None, None),
])
def test_reference_range_text_is_split_by_the_profile(tmp_path, pipeline, recorder, ref, low, high) -> None:  # type: ignore[no-untyped-def]
    run_import(write_export(tmp_path, [lis_row(ref=ref)]), pipeline)
    [event] = recorder.events(TOPIC_LAB)
    assert event["observations"][0]["reference_range"] == {"low": low, "high": high, "text": ref}


def test_a_row_with_nul_characters_is_refused_and_dead_lettered_and_the_rest_go_on(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    rows = [
        lis_row(report="OK1"),                                   # line 2
        lis_row(report="N1", item="葡萄\x00糖"),                   # line 3: in a column the event carries
        lis_row(report="N2", name="赵\x00六"),                     # line 4: in a column the profile never reads
        lis_row(report="N\x003", code="K", result="4.1"),        # line 5: in the report number itself
        lis_row(report="OK2", code="K", result="4.2"),           # line 6
    ]
    summary = run_import(write_export(tmp_path, rows), pipeline)
    assert summary.exit_code == 1 and summary.refused is None
    assert (summary.rows, summary.published_reports, summary.rejected_rows) == (5, 2, 3)
    assert {e["result_id"] for e in recorder.events(TOPIC_LAB)} == {"OK1", "OK2"}
    assert [str(p) for p in summary.problems] == [
        "line 3: NUL character(s) in column(s) 项目名称: the row is not text",
        "line 3: report N1 rejected entirely (line(s) 3): bad line(s) 3",
        "line 4: NUL character(s) in column(s) 姓名: the row is not text",
        "line 4: report N2 rejected entirely (line(s) 4): bad line(s) 4",
        "line 5: NUL character(s) in column(s) 报告单号: the row is not text"]
    letters = {letter["origin"]["line"]: letter for letter in recorder.events(TOPIC_DEADLETTER)}
    assert sorted(letters) == [3, 4, 5]
    assert letters[3]["payload"].splitlines()[1].split(",")[5] == "葡萄\ufffd糖"  # visible, never a NUL
    assert "\x00" not in recorder.text() and "\\u0000" not in recorder.text()
    assert "赵" not in recorder.text()

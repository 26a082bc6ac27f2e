"""The CSV adapter: column profiles, encodings, per-row rejection with line numbers, dead letters, and the
end-to-end path to the store (including a broker outage and the safe re-run)."""
from __future__ import annotations

import io
import threading
import uuid
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer
from sqlalchemy import func, select

from adapters.csv_export import (ImportSummary, Profile, ProfileError, RowProgress, available_profiles, import_file,
                                 load_profile)
from adapters.pipeline import ResultPipeline
from schemas import events
from exchange.broker import EmbeddedBroker, ensure_topics
from schemas.topics import DEFAULT_PARTITIONS, TOPIC_DEADLETTER, TOPIC_LAB
from schemas.resident_id import make_resident_id
from adapters.publish import Publisher
from exchange.store.models import Result
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.waiting import wait_for

DATA = Path(__file__).parent.parent / "data/csv"
SAMPLE = DATA / "lis-generic-zh.csv"
SAMPLE_IDS = ("330106198503120028", "330102197001011016", "110105199007070030")
SAMPLE_NAMES = ("张三", "李四", "王五")
RID_A = make_resident_id("33010619850312002")
RID_B = make_resident_id("44030419921111123")
HEADER_ZH = ["身份证号", "姓名", "性别", "出生日期", "报告单号", "项目代码", "项目名称", "结果", "单位", "参考范围",
             "异常标识", "报告状态", "采样时间", "报告时间"]


class Recorder:
    """Stands in for the Kafka publisher: keeps what would have been published (and acknowledged)."""

    def __init__(self) -> None:
        self.records: list = []  # type: ignore[type-arg]

    def publish(self, records) -> None:  # type: ignore[no-untyped-def]
        self.records.extend(records)

    def close(self) -> None:
        pass

    def events(self, topic: str) -> list[dict]:  # type: ignore[type-arg]
        return [orjson.loads(r.value) for r in self.records if r.topic == topic]

    def text(self) -> str:
        return b"\n".join(r.value for r in self.records).decode()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def pipeline(book, pseudonymizer, recorder) -> ResultPipeline:  # type: ignore[no-untyped-def]
    return ResultPipeline(book, pseudonymizer, recorder)  # type: ignore[arg-type]


def _row(rid: str = RID_A, report: str = "R1", code: str = "GLU", result: str = "5.6", unit: str = "mmol/L",
         ref: str = "3.9-6.1", flag: str = "", status: str = "终审", reported: str = "2025-03-01 10:00:00",
         name: str = "赵六", sex: str = "女", birth: str = "1985-03-12", item: str = "葡萄糖") -> list[str]:
    return [rid, name, sex, birth, report, code, item, result, unit, ref, flag, status, "2025-03-01 08:00:00",
            reported]


def _write(tmp_path: Path, rows: list[list[str]] | list[str], *, header: list[str] = HEADER_ZH, sep: str = ",",
           encoding: str = "utf-8", name: str = "export.csv", preamble: str = "") -> Path:
    lines = [sep.join(header)] + [r if isinstance(r, str) else sep.join(r) for r in rows]
    path = tmp_path / name
    path.write_bytes((preamble + "\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def _run(path: Path, pipeline: ResultPipeline, institution: str = "zj-hz-001", profile: str = "lis-generic-zh",
         **kwargs) -> ImportSummary:  # type: ignore[no-untyped-def]
    return import_file(path, institution, load_profile(profile), pipeline, **kwargs)


# ------------------------------------------------------------------------------------------------ parsing

def test_shipped_utf8_comma_export_becomes_reports(pipeline, recorder, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    summary = _run(SAMPLE, pipeline)
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
    path = _write(tmp_path, rows, header=header, sep="\t", encoding="gbk", name="export.tsv")
    summary = _run(path, pipeline, institution="bj-xicheng-001", profile="lis-detail-zh")
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
    rows = [_row(name=f"{rare}祥", report="R1"), _row(report="R2", code="K", result="4.0", item=f"钾{rare}")]
    path = _write(tmp_path, rows, sep="\t", encoding="gb18030")
    summary = _run(path, pipeline)
    assert (summary.encoding, summary.delimiter, summary.exit_code) == ("gb18030", "\t", 0)
    assert summary.published_reports == 2
    assert recorder.events(TOPIC_LAB)[1]["observations"][0]["item"]["local_name"] == f"钾{rare}"
    assert f"{rare}祥" not in recorder.text()
    refused = _run(path, ResultPipeline(pipeline.book, pipeline.pseudonymizer), encoding="gbk")
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
    summary = _run(path, pipeline, profile="lis-generic-en")
    assert (summary.encoding, summary.delimiter, summary.rows, summary.exit_code) == ("utf-8-sig", ";", 2, 0)
    [event] = recorder.events(TOPIC_LAB)
    assert event["reported_at"] == "2025-03-03T11:05:00+08:00"
    assert [o["item"]["unified_code"] for o in event["observations"]] == ["L0061", "L0144"]
    assert "Jane Roe" not in recorder.text()


@pytest.mark.parametrize("ref, low, high", [
    ("3.5-5.3", 3.5, 5.3), ("3.5 ~ 5.3", 3.5, 5.3), ("３．５～５．３", 3.5, 5.3), ("-3-3", -3, 3), ("3.5至5.3", 3.5, 5.3),
    ("<5.2", None, 5.2), ("≤5.2", None, 5.2), (">=40", 40, None), ("阴性", None, None), ("5.3-3.5", None, None),
])
def test_reference_range_text_is_split_by_the_profile(tmp_path, pipeline, recorder, ref, low, high) -> None:  # type: ignore[no-untyped-def]
    _run(_write(tmp_path, [_row(ref=ref)]), pipeline)
    [event] = recorder.events(TOPIC_LAB)
    assert event["observations"][0]["reference_range"] == {"low": low, "high": high, "text": ref}


def test_rows_group_by_report_number_not_by_position(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    rows = [_row(report="A", code="GLU"), _row(report="B", code="K", result="4"),
            _row(report="A", code="NA", result="140"),
            _row(report="A", code="GLU", status="初步", reported="2025-03-01 09:00:00")]
    summary = _run(_write(tmp_path, rows), pipeline)
    assert (summary.rows, summary.reports, summary.published_reports) == (4, 3, 3)
    versions = {(e["result_id"], e["version"], e["status"]): len(e["observations"]) for e in recorder.events(TOPIC_LAB)}
    assert versions == {("A", 2, "final"): 2, ("B", 2, "final"): 1, ("A", 1, "preliminary"): 1}


# ------------------------------------------------------------------------------------------------ bad rows

def test_bad_rows_are_listed_with_line_numbers_and_their_reports_rejected_whole(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    bad_id = RID_A[:-1] + ("0" if RID_A[-1] != "0" else "1")
    rows = [
        _row(report="OK1"),                                         # line 2
        _row(report="P1", code="ALT", result="40", unit="U/L"),     # line 3: held back with P1
        _row(report="P1", rid=bad_id),                              # line 4: bad resident ID
        _row(report="P2", result="abc"),                            # line 5: not a number although a unit
        _row(report="P3", reported=""),                             # line 6: missing report time
        _row(report="P4", status="待定"),                            # line 7: unknown status
        ",".join(_row(report="P5")[:-1]),                           # line 8: wrong column count
        _row(report="P5", code="K", result="4"),                    # line 9: held back with P5
        _row(report="P6", flag="??"),                               # line 10: unknown flag
        _row(report="P7", reported="2025-02-30 10:00:00"),          # line 11: impossible date
        _row(report="OK2", code="K", result="4.2"),                 # line 12
    ]
    summary = _run(_write(tmp_path, rows), pipeline)
    assert summary.exit_code == 1
    assert (summary.rows, summary.reports, summary.published_reports) == (11, 9, 2)
    assert (summary.rejected_rows, summary.rejected_reports) == (9, 7)
    text = "\n".join(str(p) for p in summary.problems)
    for expected in ("line 4: 身份证号: resident ID check character", "line 5: 结果: 'abc' is not a number",
                     "line 6: 报告时间: the report time is missing", "line 7: 报告状态: '待定' is not a known value",
                     "line 8: wrong column count: expected 14, got 13", "line 10: 异常标识: '??'",
                     "line 11: 报告时间: '2025-02-30 10:00:00' is not a date-time",
                     "line 3: report P1 rejected entirely (line(s) 3, 4): bad line(s) 4",
                     "line 8: report P5 rejected entirely (line(s) 8, 9): bad line(s) 8"):
        assert expected in text, text
    assert {e["result_id"] for e in recorder.events(TOPIC_LAB)} == {"OK1", "OK2"}
    letters = recorder.events(TOPIC_DEADLETTER)
    assert summary.dead_letters == len(letters) == 9
    assert sorted(letter["origin"]["line"] for letter in letters) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    by_line = {letter["origin"]["line"]: letter for letter in letters}
    assert "held back with report P1" in by_line[3]["error"]
    assert by_line[8]["payload"] is None  # misaligned: no cell can be trusted
    assert by_line[5]["payload"].splitlines()[1].startswith("[resident-id],女,")
    for letter in letters:
        events.validate("dead-letter.v1", letter)
        assert letter["origin"] == {"kind": "file", "topic": None, "partition": None, "offset": None,
                                    "file": str(tmp_path / "export.csv"), "line": letter["origin"]["line"],
                                    "adapter": "csv", "institution": "zj-hz-001"}
    everything = recorder.text() + text
    assert RID_A not in everything and bad_id not in everything and "赵六" not in everything


def test_one_report_number_for_two_patients_rejects_both(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    summary = _run(_write(tmp_path, [_row(report="S1"), _row(report="S1", rid=RID_B, code="K", result="4")]), pipeline)
    assert summary.published_reports == 0 and summary.rejected_rows == 2
    assert "line 3: report number S1 already belongs to another patient (line 2)" in [str(p) for p in summary.problems]
    assert RID_B not in "\n".join(map(str, summary.problems))


def test_a_misaligned_row_never_lends_a_cell_to_a_message(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    shifted = ",".join([RID_A, "周八", "女", "1985-03-12", "周八"] + _row()[5:-1])  # name in the report-number column
    summary = _run(_write(tmp_path, [_row(report="G1"), shifted]), pipeline)
    assert summary.published_reports == 1 and summary.rejected_rows == 1
    assert [str(p) for p in summary.problems] == ["line 3: wrong column count: expected 14, got 13"]
    assert "周八" not in recorder.text()


def test_quoted_newlines_blank_lines_and_trailing_delimiters_keep_line_numbers(tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    quoted = _row(report="Q1", result="阳性", unit="", ref="")
    quoted[6] = '"多行\n项目名称"'
    rows = [",".join(quoted), "", ",".join(_row(report="Q2")) + ",", ",".join(_row(report="Q3", result="x"))]
    summary = _run(_write(tmp_path, rows), pipeline)
    assert summary.rows == 3 and [p.line for p in summary.problems] == [6, 6]  # header 1, Q1 2-3, blank 4, Q2 5


def test_unknown_institution_and_missing_columns_refuse_the_file(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, [_row()])
    assert _run(path, pipeline, institution="nowhere-999").refused.startswith("unknown institution")
    header = [h for h in HEADER_ZH if h != "报告单号"]
    summary = _run(_write(tmp_path, [_row()[:4] + _row()[5:]], header=header, name="b.csv"), pipeline)
    assert summary.exit_code == 1 and "missing column(s) report_id (报告单号" in summary.refused
    [letter] = recorder.events(TOPIC_DEADLETTER)
    assert letter["origin"]["line"] == 1 and letter["origin"]["file"].endswith("b.csv")


def test_profiles_load_and_bad_profiles_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert {"lis-generic-zh", "lis-detail-zh", "lis-generic-en"} <= set(available_profiles())
    for name in available_profiles():
        assert load_profile(name).name == name
    with pytest.raises(ProfileError, match="available: .*lis-generic-zh"):
        load_profile("no-such-profile")
    base = {"columns": {"resident_id": "身份证号", "report_id": "报告单号", "item_code": "项目代码", "result": "结果",
                        "reported_at": "报告时间"}, "default_status": "final"}
    assert Profile.from_dict(base, "x.yaml").columns["result"] == ("结果",)
    for change, words in [({"columns": {**base["columns"], "name": "姓名"}}, "unknown field 'name'"),
                          ({"ignore": ["结果"]}, "both mapped and ignored"),
                          ({"default_status": None}, r"status \(or default_status\)"),
                          ({"statuses": {"终审": "done"}}, "not one of"),
                          ({"encoding": "klingon"}, "unknown encoding"),
                          ({"delimitor": ","}, "unknown key")]:
        with pytest.raises(ProfileError, match=words):
            Profile.from_dict({**base, **change}, "x.yaml")
    custom = tmp_path / "mine.yaml"
    custom.write_text("columns: {resident_id: 证件, report_id: 单号, item_code: 代码, result: 值, reported_at: 时间}\n"
                      "default_status: final\n", "utf-8")
    assert load_profile(str(custom)).name == "mine"


def test_progress_is_shown_for_large_files_on_a_pipe(tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    rows = [_row(report=f"R{i}", rid=make_resident_id(f"3301061985031{i:04d}")) for i in range(20)]
    summary = _run(_write(tmp_path, rows), pipeline, batch_reports=7,
                   progress=lambda total, label: RowProgress(total, label, stream=stream, threshold=10, tty=False))
    assert summary.published_reports == 20
    lines = stream.getvalue().splitlines()
    assert lines[0] == "checking rows: 10% (2/20)" and "publishing: 100% (20/20)" in lines
    quiet = io.StringIO()
    with RowProgress(20, "rows", stream=quiet, threshold=5000, tty=False) as update:
        update(20)
    assert quiet.getvalue() == ""


# ------------------------------------------------------------------------------------------------ real broker

def _consume(bootstrap: str, topic: str, count: int) -> list[dict]:  # type: ignore[type-arg]
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=15000)
    out = []
    for message in consumer:
        out.append(orjson.loads(message.value))
        if len(out) == count:
            break
    consumer.close()
    return out


def test_dead_letters_reach_the_broker_scrubbed(tmp_path, broker, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    bad_id = RID_B[:-1] + ("0" if RID_B[-1] != "0" else "1")
    path = _write(tmp_path, [_row(report="D1"), _row(report="D2", rid=bad_id), _row(report="D2", code="K", result="4")])
    publisher = Publisher(broker.bootstrap)
    try:
        summary = import_file(path, "zj-hz-001", load_profile("lis-generic-zh"),
                              ResultPipeline(book, pseudonymizer, publisher))
    finally:
        publisher.close()
    assert (summary.published_reports, summary.rejected_rows, summary.dead_letters) == (1, 2, 2)
    letters = _consume(broker.bootstrap, TOPIC_DEADLETTER, 2)
    for letter in letters:
        events.validate("dead-letter.v1", letter)
    assert sorted((x["origin"]["file"], x["origin"]["line"]) for x in letters) == [(str(path), 3), (str(path), 4)]
    assert {x["origin"]["adapter"] for x in letters} == {"csv"}
    assert any("resident ID check character" in x["error"] for x in letters)
    raw = orjson.dumps(letters).decode()
    assert bad_id not in raw and RID_A not in raw and "赵六" not in raw


def _stored(database) -> int:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return conn.execute(select(func.count()).select_from(Result)).scalar_one()


def test_end_to_end_stored_once_and_a_rerun_adds_nothing(broker, database, engine_thread, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    publisher = Publisher(broker.bootstrap)
    pipeline = ResultPipeline(book, pseudonymizer, publisher)
    try:
        first = import_file(SAMPLE, "zj-hz-001", load_profile("lis-generic-zh"), pipeline)
        assert (first.exit_code, first.published_reports) == (0, 4)
        wait_for(lambda: _stored(database) == 4)
        again = import_file(SAMPLE, "zj-hz-001", load_profile("lis-generic-zh"), pipeline)
        assert (again.exit_code, again.published_reports) == (0, 4)
        wait_for(lambda: engine_thread.stats.duplicates == 4)
        assert _stored(database) == 4
    finally:
        publisher.close()


def test_broker_down_refuses_then_the_rerun_stores_everything_once(tmp_path, broker, database, book,  # type: ignore[no-untyped-def]
                                                                    pseudonymizer) -> None:
    from exchange.engine import ResultEngine

    port = broker.port
    broker.stop()
    down = Publisher(broker.bootstrap, timeout_s=2.0)
    path = _write(tmp_path, [_row(report="B1"), _row(report="B1", code="K", result="4"), _row(report="B2", result="x")])
    try:
        summary = import_file(path, "zj-hz-001", load_profile("lis-generic-zh"),
                              ResultPipeline(book, pseudonymizer, down))
    finally:
        down.close()
    assert summary.exit_code == 2 and summary.published_reports == 0 and summary.dead_letters == 0
    assert summary.first_unpublished_line == 2 and summary.rejected_rows == 1  # rejections are still listed
    text = "\n".join(summary.lines())
    assert "published 0 report(s)" in text and "Re-run the same file" in text and "STOPPED" in text

    revived = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-2.log").start()
    stop = threading.Event()
    publisher = Publisher(revived.bootstrap)
    worker = ResultEngine(revived.bootstrap, database, f"test-{uuid.uuid4().hex[:8]}", publisher)
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    try:
        ensure_topics(revived.bootstrap, DEFAULT_PARTITIONS)
        thread.start()
        pipeline = ResultPipeline(book, pseudonymizer, publisher)
        for _ in range(2):
            rerun = import_file(path, "zj-hz-001", load_profile("lis-generic-zh"), pipeline)
            assert (rerun.exit_code, rerun.published_reports, rerun.dead_letters) == (1, 1, 1)
        wait_for(lambda: worker.stats.stored + worker.stats.duplicates == 2)
        assert _stored(database) == 1 and worker.stats.duplicates == 1
    finally:
        stop.set()
        thread.join(15)
        publisher.close()
        revived.stop()


def test_the_command_prints_problems_and_a_summary(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    from exchange.cli import main

    path = _write(tmp_path, [_row(report="C1"), _row(report="C2", result="abc")])
    env = {"HRX_KAFKA_BOOTSTRAP": broker.bootstrap, "HRX_PSEUDONYM_KEY": TEST_KEY.decode(),
           "HRX_VAR_DIR": str(tmp_path / "var")}
    runner = CliRunner()
    result = runner.invoke(main, ["adapter", "csv", str(path), "--institution", "zj-hz-001", "--profile",
                                  "lis-generic-zh"], env=env)
    assert result.exit_code == 1, result.output
    assert f"{path}: line 3: 结果: 'abc' is not a number" in result.stderr
    assert f"{path}: read 2 row(s) in 2 report(s) (utf-8, comma-separated)" in result.stdout
    assert "published 1 report(s) (1 row(s))" in result.stdout
    assert "rejected 1 row(s) in 1 report(s); 1 dead letter(s)" in result.stdout
    assert RID_A not in result.output
    clean = runner.invoke(main, ["adapter", "csv", str(SAMPLE), "--institution", "zj-hz-001", "--profile",
                                 "lis-generic-zh", "--dry-run"], env=env)
    assert clean.exit_code == 0 and "4 report(s) would be published" in clean.stdout
    unknown = runner.invoke(main, ["adapter", "csv", str(SAMPLE), "--institution", "zj-hz-001", "--profile", "nope"],
                            env=env)
    assert unknown.exit_code == 1 and "unknown profile 'nope'" in unknown.stderr

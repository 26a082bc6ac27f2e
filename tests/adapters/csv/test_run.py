"""An import run: per-row rejection with line numbers, whole reports held back, dead letters (recorded and
on a real broker), and the end-to-end path to the store including a broker outage and the safe re-run."""
from __future__ import annotations

import threading
import uuid

import orjson
from kafka import KafkaConsumer
from sqlalchemy import func, select

from adapters.csv import import_file, load_profile
from adapters.pipeline import ResultPipeline
from adapters.publish import Publisher
from exchange.broker import EmbeddedBroker, ensure_topics
from exchange.store.models import Result
from schemas import events
from schemas.topics import DEFAULT_PARTITIONS, TOPIC_DEADLETTER, TOPIC_LAB
from tests.adapters.csv.csvdata import HEADER_ZH, RID_A, RID_B, SAMPLE, lis_row, run_import, write_export
from tests.fixtures.waiting import wait_for


def test_bad_rows_are_listed_with_line_numbers_and_their_reports_rejected_whole(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    bad_id = RID_A[:-1] + ("0" if RID_A[-1] != "0" else "1")
    rows = [
        lis_row(report="OK1"),                                         # line 2
        lis_row(report="P1", code="ALT", result="40", unit="U/L"),     # line 3: held back with P1
        lis_row(report="P1", rid=bad_id),                              # line 4: bad resident ID
        lis_row(report="P2", result="abc"),                            # line 5: not a number although a unit
        lis_row(report="P3", reported=""),                             # line 6: missing report time
        lis_row(report="P4", status="待定"),                            # line 7: unknown status
        ",".join(lis_row(report="P5")[:-1]),                           # line 8: wrong column count
        lis_row(report="P5", code="K", result="4"),                    # line 9: held back with P5
        lis_row(report="P6", flag="??"),                               # line 10: unknown flag
        lis_row(report="P7", reported="2025-02-30 10:00:00"),          # line 11: impossible date
        lis_row(report="OK2", code="K", result="4.2"),                 # line 12
    ]
    summary = run_import(write_export(tmp_path, rows), pipeline)
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


def test_unknown_institution_and_missing_columns_refuse_the_file(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    path = write_export(tmp_path, [lis_row()])
    assert run_import(path, pipeline, institution="nowhere-999").refused.startswith("unknown institution")
    header = [h for h in HEADER_ZH if h != "报告单号"]
    summary = run_import(write_export(tmp_path, [lis_row()[:4] + lis_row()[5:]], header=header, name="b.csv"), pipeline)
    assert summary.exit_code == 1 and "missing column(s) report_id (报告单号" in summary.refused
    [letter] = recorder.events(TOPIC_DEADLETTER)
    assert letter["origin"]["line"] == 1 and letter["origin"]["file"].endswith("b.csv")


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
    path = write_export(tmp_path, [lis_row(report="D1"), lis_row(report="D2", rid=bad_id),
                                   lis_row(report="D2", code="K", result="4")])
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
    path = write_export(tmp_path, [lis_row(report="B1"), lis_row(report="B1", code="K", result="4"),
                                   lis_row(report="B2", result="x")])
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

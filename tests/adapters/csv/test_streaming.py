"""Large files: rows read, checked and published a bounded amount at a time, in the order of the file, every
rejection known before anything is published; a file written to while it is read is refused."""
from __future__ import annotations

import os
import threading
import tracemalloc
from contextlib import contextmanager

import orjson
import pytest
from kafka import KafkaConsumer

from adapters.pipeline import ResultPipeline
from adapters.publish import BrokerUnavailable, Publisher
from schemas.topics import TOPIC_DEADLETTER, TOPIC_LAB
from tests.adapters.csv.csvdata import Counter, lis_row, run_import, write_export, write_many


def _peak_bytes(path, pipeline) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        summary = run_import(path, pipeline, batch_reports=25)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.exit_code == 0 and summary.published_reports == summary.rows // 4
    return peak


def test_memory_grows_by_an_index_entry_per_report_not_by_its_rows(tmp_path, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    pipeline = ResultPipeline(book, pseudonymizer, Counter())  # type: ignore[arg-type]
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    write_many(small, 400)
    write_many(large, 4000)
    _peak_bytes(small, pipeline)  # first use: caches and lazily built validators
    peaks = _peak_bytes(small, pipeline), _peak_bytes(large, pipeline)
    # 900 more reports of 4 rows: the index holds a report number and a line number for each (and the
    # parsing caches fill up to their bound); holding the rows or the reports costs over 10 kB a report
    assert (peaks[1] - peaks[0]) / 900 < 1000, peaks


def test_reports_are_published_in_order_of_their_first_line_when_they_interleave(tmp_path, pipeline,  # type: ignore[no-untyped-def]
                                                                                   recorder) -> None:
    rows = [lis_row(report="A"),                          # 2: A stays open until line 6
            lis_row(report="B", code="K", result="4.1"),  # 3
            lis_row(report="B", code="NA", result="140"), # 4: B is complete first
            lis_row(report="C", result="x"),              # 5: C is bad
            lis_row(report="A", code="K", result="4.2"),  # 6
            lis_row(report="D", code="K", result="4.3")]  # 7
    summary = run_import(write_export(tmp_path, rows), pipeline, batch_reports=1)
    assert [e["result_id"] for e in recorder.events(TOPIC_LAB)] == ["A", "B", "D"]
    assert [len(e["observations"]) for e in recorder.events(TOPIC_LAB)] == [2, 2, 1]
    assert (summary.published_reports, summary.published_rows, summary.rejected_rows) == (3, 5, 1)
    assert [e["origin"]["line"] for e in recorder.events(TOPIC_DEADLETTER)] == [5]


def test_every_rejection_is_known_before_the_broker_is_first_used(tmp_path, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    class Down:
        bootstrap = None

        def publish(self, records) -> None:  # type: ignore[no-untyped-def]
            raise BrokerUnavailable("no broker")

    path = tmp_path / "export.csv"
    write_many(path, 2000)
    with open(path, "a", encoding="utf-8", newline="") as out:  # the only bad row is the very last one
        out.write(",".join(lis_row(report="LAST", result="abc")) + "\r\n")
    summary = run_import(path, ResultPipeline(book, pseudonymizer, Down()))  # type: ignore[arg-type]
    assert summary.exit_code == 2 and summary.published_reports == 0 and summary.first_unpublished_line == 2
    assert summary.rejected_rows == 1 and [p.line for p in summary.problems] == [2002, 2002]  # row, report
    assert summary.dead_letters_pending == 1


def test_a_file_written_to_while_it_is_read_is_refused(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    path = write_export(tmp_path, [lis_row(report="W1"), lis_row(report="W2", code="K", result="4")])

    @contextmanager
    def progress(total: int, label: str):  # type: ignore[no-untyped-def]
        if label == "checking rows":  # the LIS appends while the check runs
            with open(path, "a", encoding="utf-8", newline="") as out:
                out.write(",".join(lis_row(report="W3")) + "\r\n")
        yield lambda rows: None

    summary = run_import(path, pipeline, progress=progress)
    assert summary.exit_code == 1 and "the file changed while it was read" in (summary.refused or "")
    assert recorder.events(TOPIC_LAB) == [] and len(recorder.events(TOPIC_DEADLETTER)) == 1
    assert run_import(path, pipeline).published_reports == 3  # once complete, it imports


def test_an_export_read_from_a_pipe(tmp_path, pipeline, recorder) -> None:  # type: ignore[no-untyped-def]
    source = write_export(tmp_path, [lis_row(report="P1"), lis_row(report="P2", code="K", result="4")])
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(source.read_bytes()), daemon=True)
    writer.start()
    summary = run_import(fifo, pipeline)
    writer.join(10)
    assert summary.exit_code == 0 and summary.published_reports == 2 and summary.file == str(fifo)
    assert [e["source"]["message_id"] for e in recorder.events(TOPIC_LAB)] == ["export.fifo#L2", "export.fifo#L3"]


def _result_ids(bootstrap: str, count: int) -> set[str]:
    consumer = KafkaConsumer(TOPIC_LAB, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=15000, max_poll_records=5000)
    seen: set[str] = set()
    try:
        for message in consumer:
            seen.add(orjson.loads(message.value)["result_id"])
            if len(seen) == count:
                break
    finally:
        consumer.close()
    return seen


@pytest.mark.integration
def test_200000_rows_reach_the_broker(tmp_path, broker, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "large.csv"
    reports = write_many(path, 200_000)
    publisher = Publisher(broker.bootstrap)
    try:
        summary = run_import(path, ResultPipeline(book, pseudonymizer, publisher))
    finally:
        publisher.close()
    assert summary.exit_code == 0, summary.lines()
    assert (summary.rows, summary.published_reports, summary.published_rows) == (200_000, 50_000, 200_000)
    assert _result_ids(broker.bootstrap, len(reports)) == set(reports)

"""HRX_LOG_FORMAT=json (adapters/log_format.py): one JSON object per line, the ids of what it is about carried
from the door to the store, and no resident ID in any line (the log guard applied before the formatter)."""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from adapters.hl7 import Hl7Receiver
from adapters.hl7.mllp import Frame, Peer
from adapters.log_format import JsonFormatter, log_ids
from adapters.log_guard import PatientDataFilter
from exchange.engine import ResultEngine
from tests.adapters.hl7.hl7data import CHAOYANG, CHAOYANG_ID, fields, replace
from tests.fakes import FakePublisher

BAD_ID = "110105198003120021"  # a wrong check character: refused, and named in the refusal's text


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines through the log guard, at DEBUG, into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(PatientDataFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_carries_its_ids_and_the_context_ids(json_log: io.StringIO) -> None:
    log = logging.getLogger("adapters.test")
    with log_ids(door="fhir", request_id="r-1"):
        log.info("received %s", "a Bundle", extra={"message_id": "B-7"})
    log.warning("outside")
    first, second = lines(json_log)
    assert first["message"] == "received a Bundle" and first["level"] == "INFO" and first["logger"] == "adapters.test"
    assert (first["door"], first["request_id"], first["message_id"]) == ("fhir", "r-1", "B-7")
    assert str(first["time"]).endswith("+08:00")
    assert "door" not in second and "request_id" not in second


def test_resident_ids_are_scrubbed_from_the_message_the_ids_and_the_traceback(json_log: io.StringIO) -> None:
    log = logging.getLogger("exchange.test")
    try:
        raise ValueError(f"bad patient {CHAOYANG_ID}")
    except ValueError:
        log.exception("failed for %s", CHAOYANG_ID, extra={"message_id": CHAOYANG_ID})
    logging.getLogger("somelibrary").error("library saw %s", CHAOYANG_ID)
    text = json_log.getvalue()
    assert CHAOYANG_ID not in text
    assert len(lines(json_log)) == 2 and "exception" in lines(json_log)[0]


def test_an_hl7_ingest_logged_as_json_names_its_control_id_from_door_to_store_and_no_resident_id(
        json_log: io.StringIO, book, pseudonymizer, database) -> None:  # type: ignore[no-untyped-def]
    publisher = FakePublisher()
    receiver = Hl7Receiver("bj-chaoyang-001", book, pseudonymizer, publisher)  # type: ignore[arg-type]
    peer = Peer("127.0.0.1", 40000)
    good = receiver(Frame(CHAOYANG, len(CHAOYANG)), peer)
    assert good is not None and fields(good)["MSA-1"] == "AA"
    refused = replace(replace(CHAOYANG, CHAOYANG_ID, BAD_ID), "CY2403150088", "CY-OTHER")
    bad = receiver(Frame(refused, len(refused)), peer)
    assert bad is not None and fields(bad)["MSA-1"] != "AA"
    control_id = fields(good)["MSA-2"]

    engine = ResultEngine("127.0.0.1:9", database, "g", publisher)  # type: ignore[arg-type]
    records = [ConsumerRecord(r.topic, 0, -1, offset, 0, 0, r.key.encode(), r.value, [], None, -1, len(r.value), -1)
               for offset, r in enumerate(list(publisher.records))]
    from kafka import TopicPartition

    by_partition: dict[TopicPartition, list[ConsumerRecord]] = {}
    for record in records:
        by_partition.setdefault(TopicPartition(record.topic, 0), []).append(record)
    engine.store(engine.prepare(by_partition))
    assert engine.stats.stored == len(records) > 0

    text = json_log.getvalue()
    assert CHAOYANG_ID not in text and BAD_ID not in text
    found = lines(json_log)
    door = [line for line in found if line.get("door") == "hl7v2" and line["logger"].startswith("adapters.hl7")]
    stored = [line for line in found if str(line["message"]).startswith("engine: stored")]
    assert [line["message_id"] for line in door][0] == control_id
    assert stored and {line["message_id"] for line in stored} == {control_id}
    assert all(line["door"] == "hl7v2" and line["event_id"] for line in stored)

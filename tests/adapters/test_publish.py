"""The publish step against a real broker (tansu): acknowledged means on the topic; an absent broker is
BrokerUnavailable, within the publisher's timeout, and the same publisher works again once the broker is back."""
from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from adapters.publish import BrokerUnavailable, Publisher, Record
from exchange.broker import EmbeddedBroker, ensure_topics, free_port
from schemas.topics import DEFAULT_PARTITIONS, TOPIC_LAB
from tests.fixtures.topics import read_topic

pytestmark = pytest.mark.integration  # every test here talks to a broker, or to a port where none listens


def _record(n: int) -> Record:
    return Record(TOPIC_LAB, f"patient-{n}", orjson.dumps({"n": n}))


def test_acknowledged_records_are_on_the_topic(broker: EmbeddedBroker) -> None:
    publisher = Publisher(broker.bootstrap)
    try:
        publisher.publish([_record(1), _record(2), _record(3)])
    finally:
        publisher.close()
    assert sorted(e["n"] for e in read_topic(broker.bootstrap, TOPIC_LAB, at_least=3)) == [1, 2, 3]


def test_no_broker_at_all_is_broker_unavailable() -> None:
    publisher = Publisher(f"127.0.0.1:{free_port()}", timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        publisher.publish([_record(1)])
    assert time.monotonic() - started < 15
    publisher.close()


def test_a_broker_that_goes_away_is_broker_unavailable_and_publishing_resumes_when_it_is_back(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    publisher = Publisher(broker.bootstrap, timeout_s=2.0)
    revived = EmbeddedBroker(port=broker.port, log_path=tmp_path / "tansu-revived.log")
    try:
        publisher.publish([_record(1)])
        broker.stop()
        for attempt in (2, 3):  # on the connection it had, then on a fresh one: refused both times, never hung
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                publisher.publish([_record(attempt)])
            assert time.monotonic() - started < 15
        revived.start()
        ensure_topics(revived.bootstrap, DEFAULT_PARTITIONS)
        publisher.publish([_record(4)])  # the same publisher: the caller needs no restart
        # tansu keeps records in memory only: the revived broker holds exactly what it acknowledged
        assert [e["n"] for e in read_topic(revived.bootstrap, TOPIC_LAB, at_least=1)] == [4]
    finally:
        publisher.close()
        revived.stop()

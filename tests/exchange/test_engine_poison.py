"""The engine never stalls on one event: poison is isolated, dead-lettered once, and consumption goes on
(docs/rules.md, "Delivery"). Each case runs on SQLite and on PostgreSQL (the ``database`` fixture)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer
from sqlalchemy import func, select

from adapters.publish import Publisher, Record
from exchange.broker import consumer_lag
from exchange.store.models import DeadLetter, Result
from schemas import events
from schemas.topics import TOPIC_DEADLETTER, TOPIC_LAB
from tests.fixtures.events import lab_event
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration


def _count(database, model) -> int:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def _letters(bootstrap: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(TOPIC_DEADLETTER, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    try:
        return [events.decode("dead-letter.v1", message.value) for message in consumer]
    finally:
        consumer.close()


def _with_nul(event: dict[str, Any]) -> bytes:
    event["observations"][0]["value_text"] = "pos\x00itive"
    return events.encode(event)


def _raw_nul(event: dict[str, Any]) -> bytes:  # a NUL byte inside a JSON string: not JSON, and not storable text
    return events.encode(event).replace(b'"final"', b'"fi\x00nal"')


def _bad_utf8(event: dict[str, Any]) -> bytes:
    return events.encode(event).replace(b'"final"', b'"fi\xff\xfenal"')


def _huge_version(event: dict[str, Any]) -> bytes:  # schema-valid, beyond every store's integer
    event["version"] = 2 ** 63
    return events.encode(event)


def _digits_400(event: dict[str, Any]) -> bytes:  # a number the schema allows that no double can hold
    return events.encode(event).replace(b'"version":1', b'"version":1' + b"0" * 400)


def _year_10000(event: dict[str, Any]) -> bytes:
    return events.encode(event).replace(b'"reported_at":"20', b'"reported_at":"100')


def _long_text(event: dict[str, Any]) -> bytes:  # longer than the unit column (64) holds
    event["observations"][0]["unit"] = "u" * 300
    return events.encode(event)


def _oversized(event: dict[str, Any]) -> bytes:  # beyond the largest event a door accepts
    event["observations"] = [dict(event["observations"][0], seq=i, value_text="x" * 1500) for i in range(501)]
    return events.encode(event)


POISONS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "nul-in-text-field": _with_nul, "nul-byte-in-raw-value": _raw_nul, "invalid-utf8": _bad_utf8,
    "integer-beyond-the-store": _huge_version, "400-digit-number": _digits_400, "year-10000": _year_10000,
    "text-beyond-column": _long_text, "oversized": _oversized}


#: SQLite text holds NUL: there the event is good.
STORABLE_ON_SQLITE = {"nul-in-text-field"}


@pytest.mark.parametrize("poison", POISONS)
def test_one_poison_event_is_dead_lettered_once_and_the_rest_stored(  # type: ignore[no-untyped-def]
        poison, broker, database, engine_thread) -> None:
    publisher = Publisher(broker.bootstrap)
    before = [lab_event(result_id=f"B{i}", patient="a" * 64) for i in range(10)]
    after = [lab_event(result_id=f"A{i}", patient="a" * 64) for i in range(10)]
    bad = POISONS[poison](lab_event(result_id="P", patient="a" * 64))
    # One key: one partition, the poison in the middle of a batch.
    publisher.publish([Record(TOPIC_LAB, "k", events.encode(e)) for e in before] + [Record(TOPIC_LAB, "k", bad)]
                      + [Record(TOPIC_LAB, "k", events.encode(e)) for e in after])
    wait_for(lambda: _count(database, Result) + _count(database, DeadLetter) == 21)
    wait_for(lambda: consumer_lag(broker.bootstrap, engine_thread.group, (TOPIC_LAB,))[TOPIC_LAB] == 0)
    with database.connect() as conn:
        stored = set(conn.execute(select(Result.result_id)).scalars())
        rows = conn.execute(select(DeadLetter.topic, DeadLetter.offset, DeadLetter.error,
                                   DeadLetter.payload)).all()
    assert {f"B{i}" for i in range(10)} | {f"A{i}" for i in range(10)} <= stored
    if poison in STORABLE_ON_SQLITE and database.dialect.name == "sqlite":
        assert "P" in stored and rows == []
        publisher.close()
        return
    assert "P" not in stored
    assert len(rows) == 1 and rows[0].topic == TOPIC_LAB
    assert "\x00" not in rows[0].payload and "\x00" not in rows[0].error
    time.sleep(2)  # nothing is retried: no second letter appears
    letters = [letter for letter in _letters(broker.bootstrap) if letter["origin"]["topic"] == TOPIC_LAB]
    assert len(letters) == 1 and letters[0]["origin"]["offset"] == rows[0].offset
    assert _count(database, DeadLetter) == 1
    assert engine_thread.stats.errors == 0
    publisher.close()


def test_same_key_other_content_is_dead_lettered_as_a_conflict_and_a_resend_is_silent(  # type: ignore[no-untyped-def]
        broker, database, engine_thread) -> None:
    publisher = Publisher(broker.bootstrap)
    first = lab_event(result_id="C1", patient="b" * 64)
    resend = orjson.loads(events.encode(first))
    resend["event_id"] = events.new_event_id()  # another sending of the same content
    other = orjson.loads(events.encode(first))
    other["event_id"] = events.new_event_id()
    other["observations"][0]["value"] = 999.0
    publisher.publish([Record(TOPIC_LAB, "k", events.encode(first))])
    wait_for(lambda: _count(database, Result) == 1)
    publisher.publish([Record(TOPIC_LAB, "k", events.encode(e)) for e in (resend, other, resend)]
                      + [Record(TOPIC_LAB, "k", events.encode(lab_event(result_id="C2", patient="b" * 64)))])
    wait_for(lambda: _count(database, Result) == 2 and _count(database, DeadLetter) == 1)
    wait_for(lambda: consumer_lag(broker.bootstrap, engine_thread.group, (TOPIC_LAB,))[TOPIC_LAB] == 0)
    # In one batch too: the second of two contents under one key.
    twin = orjson.loads(events.encode(lab_event(result_id="C3", patient="b" * 64)))
    twin_other = dict(twin, status="preliminary")
    publisher.publish([Record(TOPIC_LAB, "k", events.encode(e)) for e in (twin, twin_other)])
    wait_for(lambda: _count(database, Result) == 3 and _count(database, DeadLetter) == 2)
    wait_for(lambda: consumer_lag(broker.bootstrap, engine_thread.group, (TOPIC_LAB,))[TOPIC_LAB] == 0)
    time.sleep(2)
    with database.connect() as conn:
        errors = conn.execute(select(DeadLetter.error).order_by(DeadLetter.offset)).scalars().all()
        stored = conn.execute(select(Result.event).where(Result.result_id == "C1")).scalar_one()
    assert len(errors) == 2
    assert all("conflicts with the stored result under the same issuer, result id and version" in e for e in errors)
    assert "'C1'" in errors[0] and "'C3'" in errors[1]
    assert orjson.loads(stored)["observations"][0]["value"] == first["observations"][0]["value"]
    letters = [letter for letter in _letters(broker.bootstrap) if letter["origin"]["topic"] == TOPIC_LAB]
    assert len(letters) == 2
    assert engine_thread.stats.duplicates == 2  # the two resends, silently
    publisher.close()


def test_a_backlog_of_large_events_is_consumed_without_connection_resets(  # type: ignore[no-untyped-def]
        broker, database, caplog) -> None:
    """200 events of about 500 KB published before the engine starts: its fetches stay within kafka-python's
    frame limit."""
    import logging
    import threading
    import uuid

    from exchange.engine import ResultEngine

    if database.dialect.name != "sqlite":
        pytest.skip("the fetch sizes are the consumer's, whatever the store")
    publisher = Publisher(broker.bootstrap)
    for start in range(0, 200, 20):
        publisher.publish(Record(TOPIC_LAB, f"k{i % 4}", events.encode(lab_event(
            result_id=f"L{i}", patient="c" * 64, observations=[
                {"seq": s, "item": {"unified_code": None, "local_code": "TXT"}, "value_type": "text",
                 "value_text": "x" * 3990} for s in range(125)]))) for i in range(start, start + 20))
    caplog.set_level(logging.INFO)
    engine = ResultEngine(broker.bootstrap, database, f"test-{uuid.uuid4().hex[:8]}", publisher,
                          session_timeout_ms=6000)
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: _count(database, Result) == 200, timeout=120)
    finally:
        stop.set()
        thread.join(15)
        publisher.close()
    assert "Invalid frame length" not in caplog.text
    assert engine.stats.errors == 0

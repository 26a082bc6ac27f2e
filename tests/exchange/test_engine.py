"""The engine against a real broker and both stores: storing, dead letters, offsets after commit."""
from __future__ import annotations

import orjson
from kafka import KafkaConsumer
from sqlalchemy import func, select

from exchange import events
from exchange.config import TOPIC_DEADLETTER, TOPIC_LAB
from exchange.patient_id import make_resident_id
from exchange.publisher import Publisher, Record
from exchange.store.models import DeadLetter, Result
from tests.conftest import wait_for
from tests.events import lab_event


def _count(database, model) -> int:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_events_are_stored_once_and_bad_ones_dead_lettered(broker, database, engine_thread) -> None:  # type: ignore[no-untyped-def]
    publisher = Publisher(broker.bootstrap)
    good = [lab_event(result_id=f"R{i}", patient=f"{i:064x}") for i in range(20)]
    rid = make_resident_id("11010519800101123")
    publisher.publish([Record(TOPIC_LAB, e["patient"]["pseudonym"], events.encode(e)) for e in good]
                      + [Record(TOPIC_LAB, "x", b"not json"),
                         Record(TOPIC_LAB, "x", orjson.dumps({"schema": "hr.lab-result.v1", "pid": rid}))]
                      + [Record(TOPIC_LAB, e["patient"]["pseudonym"], events.encode(e)) for e in good[:5]])
    wait_for(lambda: _count(database, Result) == 20 and _count(database, DeadLetter) == 2)
    consumer = KafkaConsumer(TOPIC_DEADLETTER, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10000)
    letters = []
    for message in consumer:
        letters.append(events.decode("dead-letter.v1", message.value))
        if len(letters) == 2:
            break
    consumer.close()
    assert {letter["origin"]["topic"] for letter in letters} == {TOPIC_LAB}
    assert all(letter["origin"]["offset"] is not None for letter in letters)
    assert any("not JSON" in letter["error"] for letter in letters)
    assert rid not in orjson.dumps(letters).decode()
    with database.connect() as conn:
        payloads = conn.execute(select(DeadLetter.payload)).scalars().all()
    assert all(rid not in (p or "") for p in payloads)
    assert engine_thread.stats.duplicates == 5
    publisher.close()


def test_offsets_are_committed_after_the_store(broker, database, engine_thread) -> None:  # type: ignore[no-untyped-def]
    from exchange.broker import consumer_lag

    publisher = Publisher(broker.bootstrap)
    publisher.publish(Record(TOPIC_LAB, "p", events.encode(lab_event(result_id=f"L{i}"))) for i in range(50))
    wait_for(lambda: _count(database, Result) == 50)
    wait_for(lambda: consumer_lag(broker.bootstrap, engine_thread.group, (TOPIC_LAB,))[TOPIC_LAB] == 0)
    publisher.close()

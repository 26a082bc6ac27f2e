"""The engine against a real broker and both stores: storing, dead letters, offsets after commit."""
from __future__ import annotations

import pytest

import os
import subprocess
import sys
from types import SimpleNamespace

import orjson
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import func, select

from schemas import events
from schemas.topics import TOPIC_DEADLETTER, TOPIC_LAB
from schemas.resident_id import make_resident_id
from adapters.publish import Publisher, Record
from exchange.store.models import DeadLetter, Result
from adapters.pseudonymize import Pseudonymizer
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.waiting import wait_for
from tests.fixtures.events import TEST_KEY_ID, lab_event


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


def test_offsets_wait_for_the_commit_of_their_batch_while_the_next_is_polled_or_not(broker, database) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL: batch N+1 is polled and validated while batch N's transaction is open. SQLite: each batch is
    written before the next poll. On both, no offset moves until the transaction of its batch has committed."""
    import threading
    import time
    import uuid

    from exchange.engine import ResultEngine

    held, written, prepared = threading.Event(), threading.Event(), []

    class HeldEngine(ResultEngine):
        def prepare(self, batch):  # type: ignore[no-untyped-def]
            found = super().prepare(batch)
            prepared.append(len(found.good))
            return found

        def store(self, batch):  # type: ignore[no-untyped-def]
            written.set()
            assert held.wait(60)
            return super().store(batch)

    publisher = Publisher(broker.bootstrap)
    engine = HeldEngine(broker.bootstrap, database, f"test-{uuid.uuid4().hex[:8]}", publisher, session_timeout_ms=6000)
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert engine.ready.wait(60)
        publisher.publish(Record(TOPIC_LAB, "p", events.encode(lab_event(result_id=f"A{i}"))) for i in range(10))
        assert written.wait(30)  # the first batch's write has begun and is held
        publisher.publish(Record(TOPIC_LAB, "p", events.encode(lab_event(result_id=f"B{i}"))) for i in range(10))
        # Counted in batches, not events: the first poll may hold only some of the A events.
        if database.dialect.name == "sqlite":
            time.sleep(3)  # a poll would have fetched the second batch by now
            assert len(prepared) == 1
        else:
            wait_for(lambda: len(prepared) >= 2)  # a second batch was polled and validated meanwhile
        assert _count(database, Result) == 0
        assert _committed(broker.bootstrap, engine.group) == 0  # no offset moved while the write is open
        held.set()
        wait_for(lambda: _count(database, Result) == 20)
        wait_for(lambda: _committed(broker.bootstrap, engine.group) == 20)
    finally:
        held.set()
        stop.set()
        thread.join(15)
        publisher.close()


def _committed(bootstrap: str, group: str) -> int:
    """The group's committed offsets on the lab topic, summed (tansu's end offsets count batches, not records,
    so lag is not used here)."""
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(TOPIC_LAB, p) for p in sorted(consumer.partitions_for_topic(TOPIC_LAB) or ())]
        return sum(consumer.committed(tp) or 0 for tp in parts)
    finally:
        consumer.close()


FOREIGN_KEY_ID = Pseudonymizer(b"another-exchange-key-0123456789").key_id
ROTATED_KEY_ID = Pseudonymizer(TEST_KEY, "sha256").key_id  # the same key under another algorithm: another id


def test_events_under_an_unknown_key_id_are_dead_lettered_when_prepared() -> None:
    from exchange.engine import KeyIds, ResultEngine

    engine = ResultEngine("127.0.0.1:9", None, "unused", None,  # type: ignore[arg-type] - prepare does no I/O
                          key_ids=KeyIds(TEST_KEY_ID, frozenset({ROTATED_KEY_ID})))
    made = [lab_event(result_id="own"), lab_event(result_id="rotated", key_id=ROTATED_KEY_ID),
            lab_event(result_id="foreign", key_id=FOREIGN_KEY_ID)]
    batch = {TopicPartition(TOPIC_LAB, 0): [SimpleNamespace(offset=i, value=events.encode(e))
                                            for i, e in enumerate(made)]}
    prepared = engine.prepare(batch)  # type: ignore[arg-type]
    assert [d.event["result_id"] for d in prepared.good] == ["own", "rotated"]
    assert [error for _, error in prepared.bad] == [f"unknown pseudonym key id {FOREIGN_KEY_ID}; this exchange uses "
                                                    f"{TEST_KEY_ID} (also accepting {ROTATED_KEY_ID})"]


def test_hrx_engine_stores_only_events_under_its_key_or_an_accepted_one(  # type: ignore[no-untyped-def]
        broker, database, database_url, tmp_path) -> None:
    env = {**os.environ, "HRX_KAFKA_BOOTSTRAP": broker.bootstrap, "HRX_DATABASE_URL": database_url,
           "HRX_VAR_DIR": str(tmp_path / "var"), "HRX_ENGINE_GROUP": "key-test", "HRX_PSEUDONYM_KEY": TEST_KEY.decode(),
           "HRX_PSEUDONYM_ACCEPTED_KEY_IDS": f" {ROTATED_KEY_ID} ,"}
    engine = subprocess.Popen([sys.executable, "-m", "exchange.cli", "engine"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    publisher = Publisher(broker.bootstrap)
    try:
        publisher.publish(Record(TOPIC_LAB, "p", events.encode(e)) for e in [
            lab_event(result_id="own"), lab_event(result_id="rotated", key_id=ROTATED_KEY_ID),
            lab_event(result_id="foreign", key_id=FOREIGN_KEY_ID)])
        wait_for(lambda: _count(database, Result) == 2 and _count(database, DeadLetter) == 1, timeout=60)
    finally:
        publisher.close()
        engine.terminate()
        _, log = engine.communicate(timeout=20)
    with database.connect() as conn:
        assert set(conn.execute(select(Result.result_id)).scalars()) == {"own", "rotated"}
        error = conn.execute(select(DeadLetter.error)).scalar_one()
    assert error == f"unknown pseudonym key id {FOREIGN_KEY_ID}; this exchange uses {TEST_KEY_ID} (also accepting " \
                    f"{ROTATED_KEY_ID})"
    assert f"storing events under key id {TEST_KEY_ID} and {ROTATED_KEY_ID}" in log


@pytest.mark.integration  # runs hrx engine
def test_hrx_engine_refuses_to_start_without_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "HRX_KAFKA_BOOTSTRAP": "127.0.0.1:9", "HRX_VAR_DIR": str(tmp_path / "var")}
    for name in ("HRX_PSEUDONYM_KEY", "HRX_PSEUDONYM_KEY_FILE", "HRX_DATABASE_URL"):
        env.pop(name, None)
    run = subprocess.run([sys.executable, "-m", "exchange.cli", "engine"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1
    assert "HRX_PSEUDONYM_KEY_FILE" in run.stderr and "HRX_VAR_DIR" in run.stderr and "hrx keys init" in run.stderr
    assert not (tmp_path / "var").exists()


class _RefusingCommits:
    """A consumer whose group refuses commits with ``error`` (what kafka-python raises during a rebalance)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def commit(self, offsets) -> None:  # type: ignore[no-untyped-def]
        raise self.error


@pytest.mark.parametrize("error", ["RebalanceInProgressError", "CommitFailedError"])
def test_a_commit_refused_by_a_rebalancing_group_keeps_the_consumer(error: str) -> None:
    """The stored batch stays uncommitted (its partitions' next owner replays it as no-ops) and the consumer is
    kept, so that its next poll rejoins the group as the same member; other broker errors still end it."""
    from kafka import errors

    from exchange.engine import ResultEngine

    engine = ResultEngine("127.0.0.1:9", None, "unused", None)  # type: ignore[arg-type] - no I/O here
    offsets = {TopicPartition(TOPIC_LAB, 0): None}
    engine._commit(_RefusingCommits(getattr(errors, error)("rebalancing")), offsets)  # type: ignore[arg-type]
    assert (engine.stats.uncommitted, engine.stats.errors) == (1, 0)
    with pytest.raises(errors.KafkaConnectionError):
        engine._commit(_RefusingCommits(errors.KafkaConnectionError("gone")), offsets)  # type: ignore[arg-type]
    assert engine.stats.uncommitted == 1

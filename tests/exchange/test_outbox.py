"""The outbox relay (exchange/outbox.py) against a real broker and both stores: stored decisions and feedback
wait while the broker is away, reach Kafka once it is back, are marked sent, and are never sent twice."""
from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from adapters.publish import Publisher
from exchange import outbox
from exchange.broker import EmbeddedBroker, ensure_topics
from exchange.store.models import Decision, Feedback
from schemas.topics import DEFAULT_PARTITIONS, TOPIC_DECISIONS, TOPIC_FEEDBACK
from tests.fixtures.topics import read_topic
from tests.fixtures.waiting import wait_for

AT = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


def _store_decisions(database: Engine, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with Session(database) as session, session.begin():
        session.add_all(Decision(
            decision_id=decision_id, result_issuer="bj-xicheng-001", result_id=f"R{n}", result_version=1,
            item_code="L0001", patient=f"{n:064x}", requesting_institution="bj-chaoyang-001", clinician_id="dr-wang",
            encounter_id="E1", order_id=None, trigger="encounter", decision="accept", reason_code=None, note=None,
            revokes=None, decided_at=AT) for n, decision_id in enumerate(ids))
    return ids


def _store_feedback(database: Engine, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with Session(database) as session, session.begin():
        session.add_all(Feedback(
            feedback_id=feedback_id, result_issuer="bj-xicheng-001", result_id=f"R{n}", result_version=1,
            patient=f"{n:064x}", kind="report_problem", note="单位疑似错误", reporter_institution="bj-chaoyang-001",
            reporter_id=None, status="open", created_at=AT, updated_at=AT) for n, feedback_id in enumerate(ids))
    return ids


def _unpublished(database: Engine) -> int:
    with Session(database) as session:
        return sum(len(session.scalars(select(model.id).where(model.published_at.is_(None))).all())
                   for model in (Decision, Feedback))


def test_rows_stored_while_the_broker_is_away_are_relayed_once_it_is_back(broker: EmbeddedBroker, database: Engine,
                                                                          tmp_path: Path) -> None:
    decisions, feedback = _store_decisions(database, 3), _store_feedback(database, 2)
    publisher = Publisher(broker.bootstrap, timeout_s=2.0)
    revived = EmbeddedBroker(port=broker.port, log_path=tmp_path / "tansu-revived.log")
    try:
        broker.stop()
        assert outbox.relay(database, publisher) == 0
        assert _unpublished(database) == 5

        revived.start()
        ensure_topics(revived.bootstrap, DEFAULT_PARTITIONS)
        assert outbox.relay(database, publisher) == 5
        assert _unpublished(database) == 0
        assert outbox.relay(database, publisher) == 0  # marked sent: nothing left to send

        later = _store_decisions(database, 1)
        assert outbox.relay(database, publisher) == 1  # only the new row

        sent_decisions = [e["decision_id"] for e in read_topic(revived.bootstrap, TOPIC_DECISIONS, at_least=4)]
        sent_feedback = [e["feedback_id"] for e in read_topic(revived.bootstrap, TOPIC_FEEDBACK, at_least=2)]
    finally:
        publisher.close()
        revived.stop()
    assert sorted(sent_decisions) == sorted(decisions + later)
    assert sorted(sent_feedback) == sorted(feedback)


def test_the_background_relay_sends_each_row_once_across_the_outage(broker: EmbeddedBroker, database: Engine,
                                                                    tmp_path: Path) -> None:
    """``run_relay`` keeps ticking through the outage and after it; the rows reach Kafka exactly once."""
    broker.stop()
    decisions = _store_decisions(database, 4)
    publisher = Publisher(broker.bootstrap, timeout_s=1.0)
    stop = threading.Event()
    relay = threading.Thread(target=outbox.run_relay, args=(database, publisher, stop, 0.2), daemon=True)
    revived = EmbeddedBroker(port=broker.port, log_path=tmp_path / "tansu-revived.log")
    relay.start()
    try:
        stop.wait(1.5)  # several ticks against the absent broker
        assert _unpublished(database) == 4
        revived.start()
        ensure_topics(revived.bootstrap, DEFAULT_PARTITIONS)
        wait_for(lambda: _unpublished(database) == 0)
        stop.wait(1.0)  # more ticks after everything was sent
        sent = [e["decision_id"] for e in read_topic(revived.bootstrap, TOPIC_DECISIONS, at_least=4)]
    finally:
        stop.set()
        relay.join(15)
        publisher.close()
        revived.stop()
    assert sorted(sent) == sorted(decisions)

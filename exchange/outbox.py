"""Transactional outbox: decisions and feedback are committed to the store first, then relayed to Kafka.

A decision is never lost because the broker was away, and never published without being stored; the relay
marks rows published only after Kafka acknowledged them, so a crash in between republishes (consumers of
``hr.decisions.v1`` / ``hr.feedback.v1`` de-duplicate on ``decision_id`` / ``feedback_id``).
"""
from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine as Database
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from schemas import events
from adapters.publish import BrokerUnavailable
from schemas.topics import TOPIC_DECISIONS, TOPIC_FEEDBACK
from adapters.publish import Publisher, Record
from exchange.store.models import Decision, Feedback

log = logging.getLogger(__name__)
_lock = threading.Lock()


def decision_event(d: Decision) -> dict[str, Any]:
    event = {
        "schema": "hr.decision.v1", "event_id": events.new_event_id(), "decision_id": d.decision_id,
        "result": {"issuer": d.result_issuer, "result_id": d.result_id, "version": d.result_version,
                   "item": d.item_code},
        "patient": d.patient, "requesting_institution": d.requesting_institution, "clinician_id": d.clinician_id,
        "encounter_id": d.encounter_id, "order_id": d.order_id, "trigger": d.trigger, "decision": d.decision,
        "reason_code": d.reason_code, "note": d.note, "decided_at": events.timestamp(d.decided_at),
    }
    events.validate("decision.v1", event)
    return event


def feedback_event(f: Feedback) -> dict[str, Any]:
    event = {
        "schema": "hr.feedback.v1", "event_id": events.new_event_id(), "feedback_id": f.feedback_id,
        "result": {"issuer": f.result_issuer, "result_id": f.result_id, "version": f.result_version},
        "kind": f.kind, "note": f.note, "reporter_institution": f.reporter_institution,
        "reporter_id": f.reporter_id, "status": f.status, "at": events.timestamp(f.updated_at),
    }
    events.validate("feedback.v1", event)
    return event


def relay(database: Database, publisher: Publisher, batch: int = 500) -> int:
    """Publish pending decisions and feedback; returns how many were published (0 if the broker is away)."""
    published = 0
    with _lock:  # one relay at a time per process: rows are marked after the acknowledgement
        for model, topic, build, key in ((Decision, TOPIC_DECISIONS, decision_event, "patient"),
                                         (Feedback, TOPIC_FEEDBACK, feedback_event, "result_issuer")):
            with database.connect() as conn:
                rows = Session(conn).scalars(select(model).where(model.published_at.is_(None))
                                             .order_by(model.id).limit(batch)).all()
            if not rows:
                continue
            try:
                publisher.publish(Record(topic, getattr(r, key), events.encode(build(r))) for r in rows)
            except BrokerUnavailable as exc:
                log.warning("outbox: %d %s row(s) wait for the broker: %s", len(rows), model.__tablename__, exc)
                return published
            with database.begin() as conn:
                now = datetime.now(UTC)
                if model is Feedback:
                    # A status change since the read resets published_at; marking it now would lose it.
                    for r in rows:
                        conn.execute(update(Feedback).where(Feedback.id == r.id, Feedback.updated_at == r.updated_at)
                                     .values(published_at=now))
                else:  # decisions never change once written
                    conn.execute(update(model).where(model.id.in_([r.id for r in rows])).values(published_at=now))
            published += len(rows)
    return published


def relay_soon(database: Database, publisher: Publisher) -> None:
    """Relay in the background right after a request stored something, so it reaches Kafka without waiting
    for the next tick of :func:`run_relay` (the request does not wait for the broker)."""
    threading.Thread(target=_relay_once, args=(database, publisher), name="outbox-now", daemon=True).start()


def _relay_once(database: Database, publisher: Publisher) -> None:
    try:
        relay(database, publisher)
    except Exception:  # noqa: BLE001 - e.g. the broker is down or the API is shutting down: nothing is lost,
        # the rows stay unpublished and run_relay retries them
        log.warning("outbox: immediate relay failed; the periodic relay will retry", exc_info=True)


def run_relay(database: Database, publisher: Publisher, stop: threading.Event, interval: float = 2.0) -> None:
    """Background loop of the API process: retries what could not be published at request time."""
    while not stop.wait(interval):
        try:
            relay(database, publisher)
        except Exception:  # noqa: BLE001 - the loop must survive a database hiccup; it retries next tick
            log.exception("outbox relay failed; retrying")

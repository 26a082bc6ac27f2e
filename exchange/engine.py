"""The engine consumer: Kafka result topics → validated events → the SQL store.

Delivery rule (docs/rules.md, "Delivery"): offsets are committed only after the SQL transaction that stored
the batch has committed. A crash between the two replays the batch, and the store's UNIQUE natural keys turn
the replay into no-ops, so every event is stored exactly once. An event that fails validation, or whose pseudonym
was made under a key id this exchange does not use (:class:`KeyIds`), is published to ``hr.deadletter.v1``
(with its source topic/partition/offset) and recorded, and consumption continues.
Scale-out: start more engine processes in the same consumer group, up to the topics' partition counts.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata
from sqlalchemy import Connection
from sqlalchemy import Engine as Database
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from exchange import collector, metrics
from schemas import events
from adapters.publish import BrokerUnavailable
from schemas.topics import RESULT_TOPICS, SCHEMA_OF_TOPIC
from schemas.dead_letter import dead_letter_event
from adapters.dead_letter import publish_dead_letters
from adapters.publish import Publisher
from exchange.conflicts import stored_digests
from schemas.content import content_digest
from exchange.store import Delivery, IngestReport, ingest, record_dead_letter

log = logging.getLogger(__name__)


#: Bytes fetched per partition and per fetch (see ResultEngine._consume).
FETCH_PARTITION_BYTES = 2 << 20
FETCH_BYTES = 16 << 20


@dataclass
class EngineStats:
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    errors: int = 0
    #: Stored batches whose offsets could not be committed because the group was rebalancing (replayed as no-ops).
    uncommitted: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class KeyIds:
    """The pseudonym key ids whose events the engine stores: its own key's, and during a rotation the ids it
    was told to accept as well (docs/rules.md, "Privacy").

    An event under any other key or algorithm carries pseudonyms that no lookup by resident ID here will ever
    compute, so storing it would lose it silently: it is dead-lettered instead, saying which id it carries.
    """

    own: str
    accepted: frozenset[str] = frozenset()

    def refusal(self, event: Mapping[str, Any]) -> str | None:
        """Why ``event`` is not stored under these keys, or None when its key id is known."""
        key_id = event["patient"]["key_id"]
        if key_id == self.own or key_id in self.accepted:
            return None
        also = f" (also accepting {', '.join(sorted(self.accepted))})" if self.accepted else ""
        return f"unknown pseudonym key id {key_id}; this exchange uses {self.own}{also}"


@dataclass
class PreparedBatch:
    """A polled batch after validation: what to store, what to dead-letter, and the offsets it completes."""

    good: list[Delivery] = field(default_factory=list)
    bad: list[tuple[ConsumerRecord, str]] = field(default_factory=list)
    offsets: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)


def describe_partitions(partitions: Sequence[TopicPartition] | set[TopicPartition]) -> str:
    """``hr.results.lab.v1 [0, 1, 2]; hr.results.imaging.v1 [5]``: partitions by topic, for the log."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{topic} {sorted(parts)}" for topic, parts in sorted(by_topic.items())) or "none"


class _LogAssignments(ConsumerRebalanceListener):
    """Logs each rebalance of the group as this member sees it: which partitions it gave up and which it got."""

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("engine: rebalance: %d partition(s) revoked: %s", len(revoked), describe_partitions(revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("engine: rebalance: %d partition(s) assigned: %s", len(assigned), describe_partitions(assigned))


class ResultEngine:
    """Consumes result topics in consumer group ``group`` and writes them to ``database``."""

    def __init__(self, bootstrap: str, database: Database, group: str, publisher: Publisher,
                 topics: Sequence[str] = RESULT_TOPICS, max_poll_records: int = 1000,
                 session_timeout_ms: int = 10000, key_ids: KeyIds | None = None) -> None:
        self.bootstrap = bootstrap
        self.database = database
        self.group = group
        self.publisher = publisher
        self.topics = tuple(topics)
        self.max_poll_records = max_poll_records
        self.session_timeout_ms = session_timeout_ms
        #: None stores events whatever their key id (embedding in a process that checked them already).
        self.key_ids = key_ids
        self.stats = EngineStats()
        #: Set once the group coordinator assigned partitions to this consumer (joining takes seconds).
        self.ready = threading.Event()
        self._committed = False  # a batch was committed since the consumer was (re)created
        self._lag_labels: set[tuple[str, str]] = set()  # the partitions whose lag gauge this engine set

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; broker or database outages are waited out, never skipped.

        The wait before resuming doubles while the outage lasts (0.5 s up to 10 s) and starts again at 0.5 s
        for the next outage once a batch has been committed in between."""
        backoff = 0.5
        with collector.tuned():  # a batch is thousands of short-lived containers: see exchange.collector
            while not stop.is_set():
                self._committed = False
                try:
                    self._consume(stop)
                except (KafkaError, BrokerUnavailable, SQLAlchemyError, OSError) as exc:
                    if self._committed:  # it had recovered from the previous outage: this one is new
                        backoff = 0.5
                    self.stats.errors += 1
                    self.stats.last_error = repr(exc)
                    metrics.ENGINE_ERRORS.inc()
                    log.warning("engine: %s; resuming from the last committed offsets in %.1fs", exc, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)

    def _consume(self, stop: threading.Event) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, client_id="hrx-engine",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=self.max_poll_records,
            session_timeout_ms=self.session_timeout_ms, heartbeat_interval_ms=self.session_timeout_ms // 4,
            # kafka-python drops the connection ("Invalid frame length") on a response larger than
            # receive_message_max_bytes (1 000 000 by default), below its own defaults for a fetch (1 MiB per
            # partition, 50 MiB in all): a backlog of large events reset the connection on every fetch. A record
            # is at most the producers' max_request_size (1 MiB, kafka-python's default, adapters/publish.py), so
            # a partition's fetch of 2 MiB always holds one whole; the response may hold fetch_max_bytes and its
            # framing, which the frame limit now exceeds.
            max_partition_fetch_bytes=FETCH_PARTITION_BYTES, fetch_max_bytes=FETCH_BYTES,
            receive_message_max_bytes=FETCH_BYTES + (1 << 20))
        consumer.subscribe(list(self.topics), listener=_LogAssignments())
        log.info("engine: consuming %s in group %s from %s", ", ".join(self.topics), self.group, self.bootstrap)
        # PostgreSQL: two stages. While one batch is written (the server works; this process waits without
        # holding the GIL) the next one is polled and validated. Batches are written one at a time, in order,
        # and the offsets of a batch are committed only after its own SQL transaction committed. SQLite writes
        # inside this process: its driver releases the GIL within each row's step and, while the next poll runs
        # Python, waits up to a switch interval to take it back: overlapping them measured slower (bench ingest).
        # So each batch is written before the next poll.
        writer = (ThreadPoolExecutor(1, thread_name_prefix="hrx-engine-store")
                  if self.database.dialect.name != "sqlite" else None)
        writing: Future[dict[TopicPartition, OffsetAndMetadata]] | None = None
        try:
            while not stop.is_set():
                batch = consumer.poll(timeout_ms=500 if writing is None else 20)
                if not self.ready.is_set() and consumer.assignment():
                    self.ready.set()
                prepared = self.prepare(batch) if batch else None
                self._note_lag(consumer)
                if writing is not None and (prepared is not None or writing.done()):
                    self._commit(consumer, writing.result())
                    writing = None
                if prepared is not None and writer is None:
                    self._commit(consumer, self.store(prepared))
                elif prepared is not None:
                    writing = writer.submit(self.store, prepared)
            if writing is not None:
                self._commit(consumer, writing.result())
        finally:
            if writer is not None:
                writer.shutdown(wait=True)
            self.ready.clear()
            consumer.close(autocommit=False)

    def _note_lag(self, consumer: KafkaConsumer) -> None:
        """Set the lag gauge of every partition this consumer owns from what its last fetch saw (the high
        watermark of the fetch response: no request to the broker); drop the gauges of partitions it lost."""
        owned = set()
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            try:
                position = consumer.position(tp, timeout_ms=0) if end is not None else None
            except (KafkaError, AssertionError):  # revoked meanwhile
                continue
            if position is not None:
                owned.add((tp.topic, str(tp.partition)))
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
        for labels in self._lag_labels - owned:
            metrics.CONSUMER_LAG.remove(*labels)
        self._lag_labels = owned

    def _commit(self, consumer: KafkaConsumer, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit a stored batch's offsets. When the group is rebalancing (a member joined, left or died) the
        commit is refused: the batch stays stored and uncommitted, and whoever owns its partitions after the
        rebalance resumes from the last committed offsets and replays it into no-ops. The next poll rejoins the
        group under this member's id; a new consumer instead would be a new member and start another rebalance."""
        try:
            consumer.commit(offsets)
        except (CommitFailedError, RebalanceInProgressError) as exc:
            self.stats.uncommitted += 1
            log.info("engine: a stored batch's offsets were not committed (%s); the group is rebalancing, and the "
                     "partitions' next owner replays the batch as no-ops", type(exc).__name__)
        else:
            self._committed = True

    def prepare(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> PreparedBatch:
        """Parse and validate one polled batch (no I/O)."""
        prepared = PreparedBatch()
        for tp, records in batch.items():
            schema = SCHEMA_OF_TOPIC[tp.topic]
            for record in records:
                try:
                    event = events.decode(schema, record.value)
                except events.InvalidEvent as exc:
                    prepared.bad.append((record, str(exc)))
                    continue
                refusal = self.key_ids.refusal(event) if self.key_ids is not None else None
                if refusal is not None:
                    prepared.bad.append((record, refusal))
                else:
                    prepared.good.append(Delivery(event, tp.topic, tp.partition, record.offset, record.value))
            prepared.offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        return prepared

    def store(self, prepared: PreparedBatch) -> dict[TopicPartition, OffsetAndMetadata]:
        """Write a prepared batch; returns the offsets that may now be committed (docs/rules.md, "Delivery").

        The good events go in one transaction. When the database refuses a value of that transaction (a data
        or integrity error, not a lost connection), the batch is split in halves until each refused event is
        alone: the others are stored and each refused one is dead-lettered, so no event can stop a partition.
        A version stored before under the same key with other content is dead-lettered as a conflict; the same
        content again is a redelivery and changes nothing. Dead letters are recorded and published after the
        results committed and before the offsets are: a crash in between finds them again on the replay, and the
        dead-letter table's UNIQUE origin keeps one row per consumed message."""
        started = time.perf_counter()
        report, refused = self._store_isolating(prepared.good)
        failed = [(record.topic, record.partition, record.offset, record.value, error)
                  for record, error in prepared.bad]
        failed += [(d.topic, d.partition, d.offset, d.raw, error) for d, error in refused]
        letters = [dead_letter_event(error, value, topic=topic, partition=partition, offset=offset)
                   for topic, partition, offset, value, error in failed]
        if letters:
            with self.database.begin() as conn:
                for letter in letters:
                    origin = letter["origin"]
                    record_dead_letter(conn, origin["topic"], origin["partition"], origin["offset"],
                                       letter["error"], letter["payload"])
            publish_dead_letters(self.publisher, letters)
        self.stats.batches += 1
        self.stats.stored += report.stored
        conflicting = sum(1 for _, error in refused if not error.startswith(STORE_REFUSED))
        self.stats.duplicates += report.duplicates - conflicting  # a conflict is dead-lettered, not a duplicate
        self.stats.dead_letters += len(letters)
        metrics.ENGINE_EVENTS.labels("stored").inc(report.stored)
        metrics.ENGINE_EVENTS.labels("duplicate").inc(report.duplicates - conflicting)
        metrics.ENGINE_EVENTS.labels("dead_letter").inc(len(letters))
        metrics.ENGINE_BATCH_SECONDS.observe(time.perf_counter() - started)
        log.debug("engine: batch stored=%d duplicates=%d dead=%d", report.stored, report.duplicates, len(letters))
        for (topic, partition, offset, value, error), letter in zip(failed, letters):
            log.warning("engine: dead-lettered %s[%d]@%d: %s", topic, partition, offset, letter["error"][:300],
                        extra=_ids(value, topic=topic, partition=partition, offset=offset))
        if log.isEnabledFor(logging.DEBUG):
            repeated = {id(d) for d in report.repeated}
            for d in prepared.good:
                if id(d) not in repeated:
                    log.debug("engine: stored %s v%s of %s", d.event["result_id"], d.event["version"],
                              d.event["issuer"], extra={
                                  "door": d.event["source"]["adapter"], "message_id": d.event["source"]["message_id"],
                                  "event_id": d.event["event_id"], "topic": d.topic, "partition": d.partition,
                                  "offset": d.offset})
        return prepared.offsets

    def _store_isolating(self, deliveries: Sequence[Delivery]) -> tuple[IngestReport, list[tuple[Delivery, str]]]:
        """Store ``deliveries`` in order; what was stored, and the deliveries not stored with why: the events the
        database refused (found by bisection) and those conflicting with a stored version."""
        if not deliveries:
            return IngestReport(), []
        try:
            with self.database.begin() as conn:
                report = ingest(conn, deliveries)
                return report, _conflicts(conn, report.repeated)
        except (DBAPIError, OverflowError, UnicodeEncodeError) as exc:
            if not refused_value(exc):
                raise
            if len(deliveries) == 1:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                log.warning("engine: the store refused the event at %s[%s]@%s: %s", deliveries[0].topic,
                            deliveries[0].partition, deliveries[0].offset, reason)
                return IngestReport(), [(deliveries[0], f"{STORE_REFUSED}: {reason}")]
        # Halves in delivery order, each committed alone: a result's versions still move its head in order.
        half = len(deliveries) // 2
        first, first_refused = self._store_isolating(deliveries[:half])
        second, second_refused = self._store_isolating(deliveries[half:])
        for name in ("stored", "duplicates", "superseded"):
            setattr(first, name, getattr(first, name) + getattr(second, name))
        first.repeated += second.repeated
        return first, first_refused + second_refused


def _ids(value: bytes | str | None, **origin: Any) -> dict[str, Any]:
    """The log ids of a consumed message (door, message id and event id when it is a JSON object that has
    them) and its origin."""
    ids: dict[str, Any] = dict(origin)
    try:
        event = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return ids
    if isinstance(event, dict):
        source = event.get("source") if isinstance(event.get("source"), dict) else {}
        for name, found in (("door", source.get("adapter")), ("message_id", source.get("message_id")),
                            ("event_id", event.get("event_id"))):
            if isinstance(found, str):
                ids[name] = found[:256]
    return ids


#: The start of the error of a dead letter whose event the database refused to store.
STORE_REFUSED = "the store refused this event"
#: The error of a dead letter whose version is stored with other content under the same key.
CONFLICT = "conflicts with the stored result under the same issuer, result id and version"


def refused_value(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a value it was given (a number out of range, a NUL in text,
    text longer than its column, a surrogate the driver cannot encode, a constraint on content) rather than
    the database being unreachable: only such an error is one event's, to be isolated and dead-lettered.
    A lost connection is every event's, and the batch is retried."""
    if isinstance(exc, (OverflowError, UnicodeEncodeError)):  # sqlite3 refuses these while binding
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return False
    return isinstance(exc, (DataError, IntegrityError))


def _conflicts(conn: Connection, repeated: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
    """The ``repeated`` deliveries whose version is stored with other content, each with its error; the rest
    are redeliveries of what is stored. Content is compared as :func:`schemas.content.content_digest`."""
    if not repeated:
        return []
    keys = [(d.event["issuer"], d.event["result_id"], d.event["version"]) for d in repeated]
    stored = stored_digests(conn, sorted(set(keys)))
    found = []
    for delivery, key in zip(repeated, keys):
        if key in stored and stored[key] != content_digest(delivery.event):
            issuer, result_id, version = key
            found.append((delivery, f"result {result_id!r} of {issuer} version {version} {CONFLICT}"))
    return found

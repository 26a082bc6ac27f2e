"""A steady stream of lab-result events into the broker, and the engine's lag measured against it.

:class:`LabStream` publishes in a thread, like a busy adapter, and keeps what the broker acknowledged: the
reports (the oracle's "acknowledged") and, per partition, the offset after the last acknowledged record — the
true end of the log. :class:`Lag` compares that end with the offsets the engine's group committed. (The
broker's own end offsets are not used: tansu reports the base offset of the last record batch plus one, see
``exchange.broker.consumer_lag``.)
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from bench.data import lab_event
from schemas import events
from schemas.topics import TOPIC_LAB

from chaos.stores import Key


class LabStream:
    """Publishes ``rate`` lab events per second (batches of ``batch``) until :meth:`stop`."""

    def __init__(self, bootstrap: str, tag: str, rate: float, batch: int = 50, seed: int = 7) -> None:
        self.bootstrap = bootstrap
        self.tag = tag
        self.rate = rate
        self.batch = batch
        self.rng = random.Random(seed)
        #: Reports the broker acknowledged → their number of observations.
        self.acknowledged: dict[Key, int] = {}
        self.end_offsets: dict[TopicPartition, int] = {}
        self.failed_sends = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{tag}", daemon=True)
        # As adapters.publish.Publisher configures its producer: every record waits for the broker's ack.
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, retries=3,
                                       enable_idempotence=False, metrics_enabled=False, client_id=f"chaos-{tag}")

    def start(self) -> LabStream:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop publishing (idempotent); what was sent is acknowledged or counted as failed when this returns."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        self._producer.close(timeout=10)

    def snapshot(self) -> tuple[dict[Key, int], dict[TopicPartition, int]]:
        with self._lock:
            return dict(self.acknowledged), dict(self.end_offsets)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            due = started + self.sent / self.rate
            if (delay := due - time.monotonic()) > 0 and self._stop.wait(delay):
                return
            batch = [lab_event(self.sent + i, self.rng, result_id=f"{self.tag}{self.sent + i:09d}")
                     for i in range(self.batch)]
            self.sent += len(batch)
            futures = [(event, self._producer.send(TOPIC_LAB, key=event["patient"]["pseudonym"].encode(),
                                                   value=events.encode(event))) for event in batch]
            for event, future in futures:
                try:
                    metadata = future.get(timeout=30)
                except KafkaError:
                    self.failed_sends += 1
                    continue
                tp = TopicPartition(metadata.topic, metadata.partition)
                with self._lock:
                    self.acknowledged[(event["issuer"], event["result_id"])] = len(event["observations"])
                    self.end_offsets[tp] = max(self.end_offsets.get(tp, 0), metadata.offset + 1)


class Lag:
    """The records of a stream the engine's consumer group has not committed yet."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                       client_id="chaos-lag", request_timeout_ms=15000)

    def __call__(self, end_offsets: Mapping[TopicPartition, int]) -> int:
        return sum(max(0, end - (self._consumer.committed(tp) or 0)) for tp, end in end_offsets.items())

    def close(self) -> None:
        self._consumer.close()

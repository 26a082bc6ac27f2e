"""The publish step: sending events to Kafka and waiting for the broker's acknowledgement.

``acks='all'`` so that an acknowledged event is on every in-sync replica. ``linger_ms=0``: every caller waits
for its acknowledgement (HL7 ACK, HTTP answer), so holding a send back to batch it only adds latency; sends
queued while a request is in flight are still batched. The idempotent producer is off:
tansu answers every idempotent send with UnknownError, and duplicates from producer retries are absorbed by
the store's UNIQUE natural keys anyway (docs/rules.md, "Delivery").
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.errors import KafkaError


log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker did not answer or did not acknowledge in time."""


@dataclass(frozen=True)
class Record:
    topic: str
    key: str
    value: bytes


class Publisher:
    """A thread-safe producer that reconnects lazily after the broker was away."""

    def __init__(self, bootstrap: str, timeout_s: float = 10.0, client_id: str = "hrx") -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.client_id = client_id
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def _get(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                try:
                    self._producer = KafkaProducer(
                        bootstrap_servers=self.bootstrap, client_id=self.client_id, acks="all",
                        enable_idempotence=False, linger_ms=0, retries=3, retry_backoff_ms=200,
                        max_block_ms=int(self.timeout_s * 1000), request_timeout_ms=int(self.timeout_s * 1000),
                        delivery_timeout_ms=int(self.timeout_s * 1000) + 2000,
                        # Nothing reads the client's metrics; recording them is ~11% of kafka-python's time
                        # per send (measured on the MLLP path, where every message waits for its ack).
                        metrics_enabled=False)
                except KafkaError as exc:
                    raise BrokerUnavailable(f"Kafka at {self.bootstrap} is unreachable: {exc}") from exc
            return self._producer

    def publish(self, records: Iterable[Record]) -> None:
        """Send every record and return only once the broker acknowledged all of them.

        Raises BrokerUnavailable when any record was not acknowledged; the caller must then answer with a
        refusal (HL7 AE, DICOM 0xA700, HTTP 503) so that the sender retries.
        """
        producer = self._get()
        try:
            futures = [producer.send(r.topic, key=r.key.encode(), value=r.value) for r in records]
            for future in futures:
                future.get(timeout=self.timeout_s)
        except KafkaError as exc:
            self._reset()
            raise BrokerUnavailable(f"Kafka at {self.bootstrap} did not acknowledge: {exc!r}") from exc

    def _reset(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            # Closed in the background with a short grace: the caller's refusal (HL7 AE, DICOM 0xA700, 503)
            # must not wait for it, and closing with no grace at all trips the sender thread.
            threading.Thread(target=_close_quietly, args=(producer,), name="producer-close", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)


def _close_quietly(producer: KafkaProducer) -> None:
    try:
        producer.close(timeout=2)
    except Exception:  # noqa: BLE001 - closing a broken producer must not mask the original error
        log.debug("closing producer failed", exc_info=True)

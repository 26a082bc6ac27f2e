"""Scale-out on real processes: the deployment's topology (docker/compose.yaml) run as child processes here.

Topology: ``hrx migrate --topics`` first (the compose ``migrate`` service: schema, then topics with
``HRX_TOPIC_PARTITIONS``: ``RESULT_PARTITIONS`` partitions per results topic), then two ``hrx serve``, three
``hrx engine`` in one consumer group, the HL7 MLLP listener and the DICOM C-STORE SCP, on one PostgreSQL store
and the embedded broker (tansu).

Run: a steady stream of results through every door (FHIR ``POST /fhir`` on both APIs, HL7 over MLLP, DICOM
C-STORE with dcmtk's ``storescu``), each source resending until acknowledged (:class:`~chaos.doors.Sender`).
Meanwhile engines are killed with SIGKILL and restarted, one after the other, and a fourth engine is added;
then the stream stops.

Rule under test (docs/rules.md, "Delivery"): however the group's members come and go, every acknowledged report
is stored exactly once; a member that dies holds its partitions only until its session times out, then the
group rebalances them to the others, which resume from the last committed offsets.

Oracle: every acknowledged report stored, one row each (zero duplicates); nothing lost; no process exited by
itself; within ``DRAIN_TIMEOUT`` s of the stream's end, the group settled (every live engine holding a share, the
shares splitting all result partitions) and its committed offsets back at the end of the log (lag zero).

Not part of ``python -m chaos``'s scenario list: it restarts nothing shared, and its test (tests/chaos/
test_scale_out.py) runs it on its own. ``bench/scale_out.py`` measures throughput and rebalance pauses on the
same topology.
"""
from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import Engine

from bench.access import Clients
from chaos import data
from chaos.doors import DicomDoor, FhirDoor, Hl7Door, Sender
from chaos.figures import Figures
from chaos.processes import Child, exchange_env, run_directory, spawn, wait_listening, wait_until
from chaos.stores import PG_ADMIN_URL, StoredResults, duplicates, ensure_pg, pg_admin
from exchange.broker import EmbeddedBroker, free_port
from exchange.store import connect
from schemas.topics import RESULT_TOPICS

RESULT_PARTITIONS = 12
GROUP = "scale-engine"
#: Items per second per door (two FHIR doors, one per API; a DICOM item is a 3-instance study).
RATES = {"fhir-1": 4.0, "fhir-2": 4.0, "hl7": 4.0, "dicom": 0.5}
#: Seconds of steady stream between two changes of the group (kill and restart, kill and restart, add).
PHASE_S = 6.0
START_TIMEOUT = 90.0
DRAIN_TIMEOUT = 90.0


def topic_partitions() -> str:
    """``HRX_TOPIC_PARTITIONS`` of this topology: ``RESULT_PARTITIONS`` per results topic."""
    return ",".join(f"{topic}={RESULT_PARTITIONS}" for topic in RESULT_TOPICS)


@contextmanager
def bare_pg(label: str) -> Iterator[str]:
    """A new, empty (unmigrated: ``hrx migrate`` is the deployment's step) PostgreSQL database; yields its URL."""
    ensure_pg()
    name = f"hrx_{label}_{uuid.uuid4().hex[:8]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        ensure_pg(60)
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_step(name: str, args: list[str], env: dict[str, str], log_dir: Path, timeout: float = 120.0) -> None:
    """A one-shot command (``hrx migrate``) that must exit 0, as compose's ``service_completed_successfully``."""
    child = spawn(name, args, env, log_dir)
    child.ended_on_purpose = True
    if child.process.wait(timeout) != 0:
        raise RuntimeError(f"{name} exited with {child.process.returncode}:\n{child.tail()}")


def log_ends(bootstrap: str, topics: tuple[str, ...] = RESULT_TOPICS) -> dict[TopicPartition, int]:
    """The true end of each partition's log (last offset + 1), read by consuming it: tansu's reported end offsets
    undercount (exchange.broker.consumer_lag), so lag is measured against what is really there."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="scale-ends",
                             consumer_timeout_ms=1500, auto_offset_reset="earliest", max_poll_records=5000)
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = {tp: 0 for tp in parts}
        for record in consumer:
            tp = TopicPartition(record.topic, record.partition)
            ends[tp] = max(ends[tp], record.offset + 1)
        return ends
    finally:
        consumer.close()


def group_lag(bootstrap: str, group: str, ends: dict[TopicPartition, int]) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             client_id="scale-lag", request_timeout_ms=15000)
    try:
        return sum(max(0, end - (consumer.committed(tp) or 0)) for tp, end in ends.items())
    finally:
        consumer.close()


ASSIGNED = re.compile(r"engine: rebalance: \d+ partition\(s\) assigned: (.*)$", re.MULTILINE)
TOPIC_PARTS = re.compile(r"(\S+) \[([\d, ]*)\]")


def assignments(engine: Child) -> list[set[TopicPartition]]:
    """Every assignment the engine logged (exchange.engine logs each rebalance as the member sees it), in order."""
    return [{TopicPartition(topic, int(p)) for topic, parts in TOPIC_PARTS.findall(line) for p in parts.split(",")
             if p.strip()} for line in ASSIGNED.findall(engine.tail(1_000_000))]


class SharedClients(Clients):
    """:class:`~bench.access.Clients` shared by the senders of both APIs: one thread registers each client."""

    def __init__(self, database: Engine) -> None:
        super().__init__(database)
        self._lock = threading.Lock()

    def _token(self, role: str, institution: str) -> str:
        with self._lock:
            return super()._token(role, institution)


class Topology:
    """The exchange's processes of docker/compose.yaml as children: APIs, engines, listeners."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.engines: list[Child] = []
        self.others: dict[str, Child] = {}
        self.ports: dict[str, int] = {}

    def add_engine(self) -> Child:
        engine = spawn(f"engine-{len(self.engines) + 1}", ["engine"], self.env, self.root)
        self.engines.append(engine)
        return engine

    def start(self, engines: int, apis: int = 2, listeners: bool = True) -> Topology:
        for k in range(apis):
            self._listen(f"api-{k + 1}", lambda port: ["serve", "--port", str(port)])
        if listeners:
            self._listen("hl7", lambda port: ["adapter", "hl7", "--listen", f"127.0.0.1:{port}", "--institution",
                                              data.HL7_INSTITUTION])
            self._listen("dicom", lambda port: ["adapter", "dicom-scp", "--institution", data.DICOM_INSTITUTION,
                                                "--host", "127.0.0.1", "--port", str(port), "--spool",
                                                str(self.root / "dicom-spool"), "--stable-seconds", "1"])
        for _ in range(engines):
            self.add_engine()
        for name, port in self.ports.items():
            wait_listening(self.others[name], port, START_TIMEOUT)
        return self

    def _listen(self, name: str, args: Callable[[int], list[str]]) -> None:
        self.ports[name] = port = free_port()
        self.others[name] = spawn(name, args(port), self.env, self.root)

    def live_engines(self) -> list[Child]:
        return [e for e in self.engines if e.alive()]

    def crashed(self) -> list[str]:
        return [f"{c.name}: {c.tail(400)!r}" for c in [*self.engines, *self.others.values()] if c.crashed]

    def stop(self) -> None:
        for child in [*self.others.values(), *self.engines]:
            child.stop()


def run(short: bool = True) -> list[Figures]:
    with run_directory("scale-out") as root:
        return [scale_out(root)]


def scale_out(root: Path, tag: int = 7) -> Figures:
    """Kill and restart two of three engines, add a fourth, under a stream through every door; the verdict."""
    figures = Figures("scale-out", "postgresql", tries_of="group changes")
    broker = EmbeddedBroker(log_path=root / "tansu.log").start()
    senders: dict[str, Sender] = {}
    topology: Topology | None = None
    try:
        with bare_pg("scale_out") as url:
            env = exchange_env(bootstrap=broker.bootstrap, var_dir=root, database_url=url, group=GROUP,
                               HRX_TOPIC_PARTITIONS=topic_partitions())
            run_step("migrate", ["migrate", "--topics"], env, root)  # before anything else, as compose does
            topology = Topology(root, env).start(engines=3)
            stored = StoredResults(url)
            clients = SharedClients(connect(url))
            files = root / "sent"
            doors: dict[str, tuple[object, Callable[[int], data.Item]]] = {
                "fhir-1": (FhirDoor(f"http://127.0.0.1:{topology.ports['api-1']}", clients),
                           lambda n: data.fhir_item(n, tag)),
                "fhir-2": (FhirDoor(f"http://127.0.0.1:{topology.ports['api-2']}", clients),
                           lambda n: data.fhir_item(n, tag + 1)),
                "hl7": (Hl7Door(topology.ports["hl7"]), lambda n: data.hl7_item(n, tag)),
                "dicom": (DicomDoor(topology.ports["dicom"]), lambda n: data.dicom_study(files, n, tag)),
            }
            for name, (door, make) in doors.items():
                senders[name] = Sender(door, make, RATES[name]).start()  # type: ignore[arg-type]
            started = time.monotonic()
            if not wait_until(lambda: stored.count() > 0, START_TIMEOUT, 0.2):
                raise RuntimeError(f"nothing stored within {START_TIMEOUT:.0f} s of the first send")
            figures.extra["first_store_s"] = round(time.monotonic() - started, 1)
            for victim in (0, 1):  # SIGKILL an engine mid-stream and start another in its place
                time.sleep(PHASE_S)
                topology.engines[victim].kill9()
                topology.add_engine()
                figures.tries += 1
            time.sleep(PHASE_S)
            topology.add_engine()  # scale out: a fourth member joins the group
            figures.tries += 1
            time.sleep(PHASE_S)
            for sender in senders.values():
                sender.stop()
            load_ended = time.monotonic()
            acknowledged = {key for name, sender in senders.items() for d in sender.deliveries
                            if d.acknowledged_at is not None for key in d.item.keys}

            def settled(partitions: set[TopicPartition]) -> bool:
                """Every live engine holds a share and the shares split the partitions: no rebalance pending."""
                latest = [(assignments(e) or [set()])[-1] for e in topology.live_engines()]
                held = [tp for share in latest for tp in share]
                return all(latest) and len(held) == len(set(held)) and set(held) == partitions

            def drained() -> bool:
                ends = log_ends(broker.bootstrap)
                return (acknowledged <= set(stored.rows_per_key()) and settled(set(ends))
                        and group_lag(broker.bootstrap, GROUP, ends) == 0)
            if wait_until(drained, DRAIN_TIMEOUT, 1.0):
                figures.lag_zero_seconds = round(time.monotonic() - load_ended, 1)
            time.sleep(1.0)  # a replayed batch still under way must not add rows
            rows = stored.rows_per_key()
            live_engines = topology.live_engines()
            latest = [(assignments(e) or [set()])[-1] for e in live_engines]
            rebalances = sum(len(assignments(e)) for e in topology.engines)
            ends = log_ends(broker.bootstrap)
            final_lag = group_lag(broker.bootstrap, GROUP, ends)
            crashed = topology.crashed()
            stored.close()
            clients.database.dispose()
    finally:
        for sender in senders.values():
            sender.stop()
        if topology is not None:
            topology.stop()
        broker.stop()
    missing = sorted(acknowledged - set(rows))
    unanswered = [f"{name} item {k}" for name, s in senders.items() for k, d in enumerate(s.deliveries)
                  if d.acknowledged_at is None]
    figures.acknowledged = len(acknowledged)
    figures.stored = len(acknowledged) - len(missing)
    figures.lost_not_allowed = len(missing)
    figures.duplicates = duplicates(rows)
    figures.refusals = sum(d.refusals for s in senders.values() for d in s.deliveries)
    figures.hangs = sum(d.hangs for s in senders.values() for d in s.deliveries)
    figures.http_5xx = sum(getattr(s.door, "http_5xx", 0) for s in senders.values())
    figures.crashes = len(crashed)
    result_partitions = {tp for tp in ends}
    figures.extra.update({
        "per_door": {name: sum(1 for d in s.deliveries if d.acknowledged_at is not None)
                     for name, s in senders.items()},
        "live_engines": len(live_engines), "assignments_logged": rebalances,
        "partitions_per_engine": sorted(len(m) for m in latest), "result_partitions": len(result_partitions),
        "stored_not_acknowledged": len(set(rows) - acknowledged)})
    figures.expect(figures.acknowledged > 0 and all(figures.extra["per_door"].values()),
                   f"a door acknowledged nothing: {figures.extra['per_door']}")
    figures.expect(not missing, f"{len(missing)} acknowledged report(s) not stored, e.g. {missing[:3]}")
    figures.expect(figures.duplicates == 0, f"{figures.duplicates} duplicate row(s)")
    figures.expect(not unanswered, f"{len(unanswered)} item(s) never acknowledged, e.g. {unanswered[:3]}")
    figures.expect(not crashed, f"processes exited by themselves: {crashed}")
    figures.expect(figures.http_5xx == 0, f"{figures.http_5xx} HTTP 5xx answers")
    figures.expect(len(result_partitions) == RESULT_PARTITIONS * len(RESULT_TOPICS),
                   f"{len(result_partitions)} result partitions, {RESULT_PARTITIONS} per results topic configured")
    assigned = [tp for member in latest for tp in member]
    figures.expect(len(live_engines) == 4, f"{len(live_engines)} engines alive, 4 expected (3 - 2 killed + 2 restarted "
                   "+ 1 added)")
    figures.expect(set(assigned) == result_partitions and len(assigned) == len(set(assigned)) and all(latest),
                   f"after the last rebalance the live engines hold {len(set(assigned))} of {len(result_partitions)} "
                   f"result partitions ({len(assigned)} assignments), per engine {figures.extra['partitions_per_engine']}")
    figures.expect(final_lag == 0, f"lag {final_lag} after the drain")
    figures.expect(figures.lag_zero_seconds is not None, f"lag not back to zero within {DRAIN_TIMEOUT:.0f} s")
    return figures

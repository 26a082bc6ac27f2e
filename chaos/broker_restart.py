"""Scenario ``broker-restart``: the embedded broker killed (``kill -9``) and restarted under load, with every
door open: FHIR (``POST /fhir`` on ``hrx serve``), HL7 v2 (the MLLP listener, ``hrx adapter hl7 --listen``),
DICOM C-STORE (dcmtk's ``storescu`` against ``hrx adapter dicom-scp``) and CSV (``adapters.csv.import_file``).

The embedded broker (tansu) is memory-only, so what it held dies with it. docs/rules.md, "Delivery" states what
may be lost: an event acknowledged to its source but not yet stored by the engine when the embedded broker
dies; a DICOM instance stays in the adapter's spool until its study is published, so only studies published
before the kill and not yet stored may be lost. The oracle:

- **lost-not-allowed = 0**: every acknowledged report is stored, except those the rule above allows — a report
  whose door acknowledged it (for DICOM: whose study was published) before a kill, and which was not in the
  store when the broker died (read from the store while the broker is down);
- **false ACKs = 0**: nothing acknowledged after the broker came back is missing;
- **duplicates = 0**: one stored row per report, although sources resend after every refusal;
- no door answers anything but ACK or its documented refusal (HTTP 503, AE, 0xA700, CSV exit 2); no 5xx but
  503; no process of the exchange exits by itself; every item is acknowledged in the end (a door that keeps
  refusing after the broker is back counts as a hang); the engine catches up (lag zero) within
  ``DRAIN_TIMEOUT`` s.

Run: broker, SQLite store, ``hrx engine``, ``hrx serve``, the MLLP listener and the SCP as child processes; one
sender per door at a steady pace, resending refused items (:class:`~chaos.doors.Sender`). Once every door has
had ``per_phase`` items acknowledged since the last restart, the broker is killed, left down for the next of
``DOWNTIMES`` (2 to 12 s; in the short form once, 11 s) and started again on the same port with the exchange's
topics.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exchange.broker import consumer_lag, free_port
from schemas.topics import RESULT_TOPICS

from chaos import data
from chaos.doors import CsvDoor, DicomDoor, FhirDoor, Hl7Door, Sender
from chaos.figures import Figures
from bench.access import Clients
from bench.data import PSEUDONYM_KEY
from exchange.store import connect
from chaos.processes import (Child, RestartableBroker, exchange_env, run_directory, spawn,
                             wait_listening, wait_until)
from chaos.stores import Key, StoredResults, fresh_store

#: How long the broker stays down after each kill, in seconds. Short outages end while the doors still wait for
#: the broker (every publish waits up to 4 s at the MLLP listener, 10 s at the API and in CSV runs); long ones
#: outlast those waits, so that every door answers its refusal and the sources resend.
DOWNTIMES = (2.0, 12.0, 5.0, 12.0, 2.0)
SHORT_DOWNTIMES = (11.0,)
PER_PHASE = 20
SHORT_PER_PHASE = 5
#: Items per second per door (a CSV item is an export of CSV_REPORTS reports, a DICOM item a 3-instance study).
RATES = {"fhir": 20.0, "hl7": 20.0, "dicom": 2.0, "csv": 1.0}
CSV_REPORTS = 10
PHASE_TIMEOUT = 180.0
#: Before each kill, everything acknowledged since the last restart more than CATCH_UP_S seconds ago must be
#: stored (the engine keeps up with this load within a second); what is still missing after CATCH_UP_TIMEOUT
#: seconds was passed over, not "not yet stored", and may not be lost.
CATCH_UP_S = 5.0
CATCH_UP_TIMEOUT = 60.0
DRAIN_TIMEOUT = 180.0
GROUP = "chaos-engine"


@dataclass
class Timeline:
    """The kills and restarts, and what the store and the DICOM spool held while the broker was down."""

    kills: list[float] = field(default_factory=list)
    backs: list[float] = field(default_factory=list)
    stored_while_down: list[set[Key]] = field(default_factory=list)
    spool_published_while_down: list[set[Key]] = field(default_factory=list)
    engine_resumed_s: list[float] = field(default_factory=list)
    #: Per phase: reports acknowledged in it that the engine had not stored CATCH_UP_TIMEOUT s later.
    passed_over: list[set[Key]] = field(default_factory=list)


def run(short: bool = False) -> list[Figures]:
    with run_directory("broker-restart") as tmp:
        return restart_broker(SHORT_DOWNTIMES if short else DOWNTIMES, SHORT_PER_PHASE if short else PER_PHASE,
                              tmp)


def spool_state(spool: Path) -> tuple[set[Key], int]:
    """The DICOM spool's published studies (as store keys) and how many wait to be published."""
    db = sqlite3.connect(f"file:{spool / 'index.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT result_id, version, dirty, rejected FROM studies").fetchall()
    finally:
        db.close()
    published = {(data.DICOM_INSTITUTION, r[0]) for r in rows if r[1] > 0 and r[0]}
    return published, sum(1 for r in rows if r[2] == 1 and r[3] == 0)


def restart_broker(downtimes: tuple[float, ...], per_phase: int, root: Path, tag: int = 1) -> list[Figures]:
    broker = RestartableBroker(root / "tansu.log").start()
    spool = root / "dicom-spool"
    children: dict[str, Child] = {}
    senders: dict[str, Sender] = {}
    timeline = Timeline()
    try:
        with fresh_store("sqlite", root, "broker_restart") as url:
            stored = StoredResults(url)
            env = exchange_env(bootstrap=broker.bootstrap, var_dir=root, database_url=url, group=GROUP)
            api_port, hl7_port, dicom_port = free_port(), free_port(), free_port()
            children["engine"] = spawn("engine", ["engine"], env, root)
            children["api"] = spawn("api", ["serve", "--port", str(api_port)], env, root)
            children["hl7"] = spawn("hl7", ["adapter", "hl7", "--listen", f"127.0.0.1:{hl7_port}", "--institution",
                                            data.HL7_INSTITUTION], env, root)
            children["dicom"] = spawn("dicom", ["adapter", "dicom-scp", "--institution", data.DICOM_INSTITUTION,
                                                "--host", "127.0.0.1", "--port", str(dicom_port), "--spool",
                                                str(spool), "--stable-seconds", "1"], env, root)
            for name, port in (("api", api_port), ("hl7", hl7_port), ("dicom", dicom_port)):
                wait_listening(children[name], port, 90)
            files = root / "sent"
            makers: dict[str, tuple[object, Callable[[int], data.Item]]] = {
                "fhir": (FhirDoor(f"http://127.0.0.1:{api_port}", Clients(connect(url))),
                         lambda n: data.fhir_item(n, tag)),
                "hl7": (Hl7Door(hl7_port), lambda n: data.hl7_item(n, tag)),
                "dicom": (DicomDoor(dicom_port), lambda n: data.dicom_study(files / "dicom", n, tag)),
                "csv": (CsvDoor(broker.bootstrap, PSEUDONYM_KEY),
                        lambda n: data.csv_export(_mkdir(files / "csv"), n, tag, CSV_REPORTS)),
            }
            for name, (door, make) in makers.items():
                senders[name] = Sender(door, make, RATES[name]).start()  # type: ignore[arg-type]
            phase_started = time.monotonic()
            for downtime in downtimes:
                _wait_phase(senders, stored, per_phase, phase_started, timeline)
                timeline.kills.append(time.monotonic())
                broker.kill9()
                time.sleep(downtime)
                timeline.stored_while_down.append(set(stored.rows_per_key()))
                timeline.spool_published_while_down.append(spool_state(spool)[0])
                # Taken before the new broker listens: no acknowledgement after this moment can come from the
                # broker that was killed seconds ago.
                timeline.backs.append(time.monotonic())
                broker.start()
                phase_started = timeline.backs[-1]
            _wait_phase(senders, stored, per_phase, phase_started, timeline)
            for sender in senders.values():
                sender.stop()
            load_ended = time.monotonic()
            must_store, allowed = classify(senders, timeline)

            def drained() -> bool:
                keys = set(stored.rows_per_key())
                return (must_store <= keys and spool_state(spool)[1] == 0
                        and sum(consumer_lag(broker.bootstrap, GROUP, RESULT_TOPICS).values()) == 0)

            lag_zero = (round(time.monotonic() - load_ended, 1)
                        if wait_until(drained, DRAIN_TIMEOUT, 1.0) else None)
            time.sleep(2.0)  # late replays must not add rows
            rows = stored.rows_per_key()
            crashed = {name for name, child in children.items() if child.crashed}
            resent = _resend_lost(senders, rows, stored)
            stored.close()
            out = _figures(senders, timeline, rows, must_store, allowed, crashed, lag_zero, downtimes, children)
            out[0].extra["topics_short_of_partitions_after_each_restart"] = broker.short_topics[1:]
            for figures in out[1:]:
                figures.extra["lost_then_resent_stored"] = resent[figures.variant]
            return out
    finally:
        for sender in senders.values():
            sender.stop(5)
            sender.door.close()
        for child in children.values():
            child.stop()
        broker.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _resend_lost(senders: dict[str, Sender], rows: dict[Key, int], stored: StoredResults,
                 wait: float = 8.0) -> dict[str, str]:
    """Send every acknowledged-then-lost item once more, as a source that never got its answer would; per
    door, how many of them that stored ("recovered/lost"). Not an oracle: it shows which doors recognise the
    resend as a duplicate of what they acknowledged before (docs/rules.md, "Delivery")."""
    lost: dict[str, list[Key]] = {}
    for name, sender in senders.items():
        lost[name] = []
        for delivery in sender.deliveries:
            keys = [k for k in delivery.item.keys if k not in rows]
            if delivery.acknowledged_at is None or not keys:
                continue
            if isinstance(sender.door, DicomDoor):
                sender.door.forget(delivery.item)
            sender.door.send(delivery.item)
            lost[name] += keys
    everything = [k for keys in lost.values() for k in keys]
    if everything:
        wait_until(lambda: all(k in set(stored.rows_per_key()) for k in everything), wait, 1.0)
    now = set(stored.rows_per_key())
    return {name: f"{sum(1 for k in keys if k in now)}/{len(keys)}" for name, keys in lost.items()}


def _wait_phase(senders: dict[str, Sender], stored: StoredResults, per_phase: int, since: float,
                timeline: Timeline) -> None:
    """Until every door had ``per_phase`` items acknowledged since ``since``, the engine stored again, and it
    stored everything acknowledged since ``since`` up to CATCH_UP_S seconds ago (else: ``passed_over``)."""
    before = stored.count()
    resumed: float | None = None

    def ready() -> bool:
        nonlocal resumed
        if resumed is None and stored.count() > before:
            resumed = time.monotonic()
        return resumed is not None and all(s.acknowledged_since(since) >= per_phase for s in senders.values())

    if not wait_until(ready, PHASE_TIMEOUT, 0.2):
        counts = {name: s.acknowledged_since(since) for name, s in senders.items()}
        raise RuntimeError(f"the load did not get going within {PHASE_TIMEOUT:.0f} s: acknowledged {counts}, "
                           f"engine stored again: {resumed is not None}")
    if timeline.backs:
        timeline.engine_resumed_s.append(round((resumed or since) - since, 1))

    def overdue() -> set[Key]:
        until = time.monotonic() - CATCH_UP_S
        acknowledged = {k for s in senders.values() for d in list(s.deliveries)
                        if d.acknowledged_at is not None and since <= d.acknowledged_at <= until for k in d.item.keys}
        return acknowledged - set(stored.rows_per_key())

    wait_until(lambda: not overdue(), CATCH_UP_TIMEOUT, 0.5)
    timeline.passed_over.append(overdue())


def classify(senders: dict[str, Sender], timeline: Timeline) -> tuple[set[Key], set[Key]]:
    """(must be stored, may be lost) among the acknowledged reports (docs/rules.md, "Delivery")."""
    must: set[Key] = set()
    allowed: set[Key] = set()
    for name, sender in senders.items():
        for delivery in sender.deliveries:
            at = delivery.acknowledged_at
            if at is None:
                continue
            for key in delivery.item.keys:
                if may_be_lost(name, key, at, timeline):
                    allowed.add(key)
                else:
                    must.add(key)
    return must, allowed


def may_be_lost(door: str, key: Key, acknowledged_at: float, timeline: Timeline) -> bool:
    """Published to a broker that was then killed before the engine stored it — and not passed over by the
    engine while that broker was up (see CATCH_UP_S)."""
    if any(key in skipped for skipped in timeline.passed_over):
        return False
    for kill, back, stored, spool_published in zip(timeline.kills, timeline.backs, timeline.stored_while_down,
                                                   timeline.spool_published_while_down, strict=True):
        if acknowledged_at > back:
            continue  # acknowledged by a later broker
        published = key in spool_published if door == "dicom" else True
        if published and key not in stored:
            return True
    return False


def _figures(senders: dict[str, Sender], timeline: Timeline, rows: dict[Key, int], must_store: set[Key],
             allowed: set[Key], crashed: set[str], lag_zero: float | None, downtimes: tuple[float, ...],
             children: dict[str, Child]) -> list[Figures]:
    process_of = {"fhir": "api", "hl7": "hl7", "dicom": "dicom", "csv": None}
    out: list[Figures] = []
    first_back = timeline.backs[0] if timeline.backs else float("inf")
    for name, sender in senders.items():
        figures = Figures("broker-restart", name, tries_of="sends")
        acked_keys = [k for d in sender.deliveries if d.acknowledged_at is not None for k in d.item.keys]
        acked_after = {k for d in sender.deliveries if d.acknowledged_at is not None and d.acknowledged_at > first_back
                       for k in d.item.keys}
        lost = [k for k in acked_keys if k not in rows]
        figures.tries = sum(d.tries for d in sender.deliveries)
        figures.acknowledged = len(acked_keys)
        figures.stored = len(acked_keys) - len(lost)
        figures.lost_allowed = sum(1 for k in lost if k in allowed)
        not_allowed = [k for k in lost if k in must_store]
        figures.lost_not_allowed = len(not_allowed)
        figures.false_acks = sum(1 for k in not_allowed if k in acked_after)
        figures.duplicates = sum(rows.get(k, 0) - 1 for k in set(acked_keys) if rows.get(k, 0) > 1)
        figures.refusals = sum(d.refusals for d in sender.deliveries)
        figures.http_5xx = getattr(sender.door, "http_5xx", 0)
        process = process_of[name]
        figures.crashes = int(process in crashed)
        unacknowledged = [d for d in sender.deliveries if d.acknowledged_at is None]
        figures.hangs = sum(d.hangs for d in sender.deliveries) + len(unacknowledged)
        figures.lag_zero_seconds = lag_zero
        errors = [e for d in sender.deliveries for e in d.errors]
        exposed = [sum(1 for d in sender.deliveries for k in d.item.keys
                       if d.acknowledged_at is not None and d.acknowledged_at <= back and k not in stored
                       and (name != "dicom" or k in published))
                   for back, stored, published in zip(timeline.backs, timeline.stored_while_down,
                                                      timeline.spool_published_while_down, strict=True)]
        figures.extra = {"items": len(sender.deliveries), "acknowledged_not_stored_at_each_kill": exposed,
                         "unexpected_answers": len(errors)}
        if name == "dicom":
            held = [sum(1 for d in sender.deliveries for k in d.item.keys
                        if d.acknowledged_at is not None and d.acknowledged_at <= back and k not in published)
                    for back, published in zip(timeline.backs, timeline.spool_published_while_down, strict=True)]
            figures.extra["studies_held_in_spool_at_each_kill"] = held
            figures.extra["c_store_statuses"] = dict(sender.door.statuses)  # type: ignore[attr-defined]
        figures.expect(not not_allowed, f"{len(not_allowed)} acknowledged report(s) lost that the rule does not "
                                        f"allow to be lost, e.g. {not_allowed[:3]}")
        figures.expect(figures.false_acks == 0, f"{figures.false_acks} false ACK(s)")
        figures.expect(figures.duplicates == 0, f"{figures.duplicates} duplicate row(s)")
        figures.expect(figures.http_5xx == 0, f"{figures.http_5xx} 5xx answer(s) other than 503")
        figures.expect(not errors, f"{len(errors)} unexpected answer(s), e.g. {errors[:2]}")
        figures.expect(not unacknowledged, f"{len(unacknowledged)} item(s) never acknowledged")
        figures.expect(figures.hangs == 0, f"{figures.hangs} request(s) without an answer in time")
        figures.expect(not figures.crashes, f"{process} exited by itself: {children[process].tail(500)!r}"
                       if process else "")
        figures.expect(lag_zero is not None, f"not drained within {DRAIN_TIMEOUT:.0f} s")
        out.append(figures)
    total = Figures("broker-restart", "all doors", tries=len(downtimes), tries_of="broker kills -9",
                    acknowledged=sum(f.acknowledged for f in out), stored=sum(f.stored for f in out),
                    lost_allowed=sum(f.lost_allowed for f in out),
                    lost_not_allowed=sum(f.lost_not_allowed for f in out),
                    duplicates=sum(f.duplicates for f in out), false_acks=sum(f.false_acks for f in out),
                    refusals=sum(f.refusals for f in out), http_5xx=sum(f.http_5xx for f in out),
                    crashes=len(crashed), hangs=sum(f.hangs for f in out), lag_zero_seconds=lag_zero)
    total.extra = {"sends": sum(f.tries for f in out), "downtimes_s": list(downtimes),
                   "engine_resumed_after_restart_s": timeline.engine_resumed_s}
    skipped = [len(keys) for keys in timeline.passed_over]
    total.extra["passed_over_per_phase"] = skipped
    first = sorted(set().union(*timeline.passed_over))[:3]
    total.expect(not any(skipped), f"the engine passed over acknowledged reports while the broker was up "
                                   f"(per phase: {skipped}); the first: {first}")
    total.expect("engine" not in crashed, f"the engine exited by itself: {children['engine'].tail(500)!r}")
    total.expect(all(f.ok for f in out), "a door failed its oracle (above)")
    return [total, *out]

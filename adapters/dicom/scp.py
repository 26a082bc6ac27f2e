"""The C-ECHO / C-STORE SCP: receive instances, answer only once they are durable, assemble studies.

Answers (docs/rules.md, "Delivery"):

- 0x0000 once the instance's metadata record is committed (fsynced) to the spool — or when its SOP
  Instance UID is already there (a resend: no second event);
- 0xA700 (out of resources) when the spool cannot commit, or while the broker has been unreachable for
  longer than ``broker_grace`` seconds (back-pressure: the modality keeps the images and retries, rather
  than the adapter's disk filling up); ``broker_grace=0`` refuses as soon as the broker is seen down;
- 0xA900 for a data set that does not match its SOP class / lacks the study's Type 1 identifiers, 0xC000 for
  an undecodable or truncated data set, 0xC010/0xC011 for a missing / invalid resident ID, 0xC012 for an
  instance whose patient differs from its study's — each with an ErrorComment; nothing is spooled for them.

Association limits: a non-zero maximum PDU size; a bounded number of concurrent associations in all
(pynetdicom rejects the next one with "local limit exceeded"), per calling AE title and per source address
(:mod:`.admission`, the same rejection), so that one host cannot hold every slot. The door
(:mod:`.admission`, docs/rules.md "Network doors"): when an allow-list or ``allow_ae`` is given, only the
calling AE titles bound to the SCP's institution (from the addresses their entries name) associate; the
others are rejected, calling AE title not recognized. TLS: with ``ssl_context`` (:func:`adapters.tls.server_context`)
the SCP accepts DICOM over TLS only, through pynetdicom's documented ``ssl_context``; the handshake runs in the
association's thread, bounded by the context's handshake timeout (:mod:`adapters.tls`). Timeouts (pynetdicom's AE timeouts): an association idle for
``network_timeout`` seconds is aborted; ``acse_timeout`` bounds the wait for the A-ASSOCIATE-RQ after a
connection is made and for the transport to close after a rejection or release (the ARTIM timer);
``dimse_timeout`` bounds the wait for the rest of a DIMSE message.

TCP_NODELAY / TCP_QUICKACK: with a sender that keeps Nagle on (dcmtk ``TCP_NODELAY=0``), the last small
segment of each of its messages waits for our delayed ACK (tens of milliseconds per instance). TCP_NODELAY
alone does not change that; re-arming TCP_QUICKACK after each read does. :class:`NoDelayAssociationServer`
sets both (bench/dicom.py measures both kinds of sender). The pynetdicom tuning under it, fenced to the
release it was written for, is :mod:`adapters.dicom.pynetdicom_compat`.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from adapters import metrics
from adapters.dicom.admission import Admission, CallerDoor, CallerLimits
from adapters.dicom.metadata import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SOP_CLASS_MISMATCH,
    DicomError,
    InstanceRecord,
    decode,
    instance_record,
)
from adapters.dicom.pynetdicom_compat import TunedAssociationServer, start_server
from adapters.dicom.spool import (
    Spool,
    SpoolUnavailable,
    StudyAssembler,
    broker_reachable,
)
from adapters.doors import AllowList, announce
from adapters.pipeline import ResultPipeline
from adapters.pseudonymize import Pseudonymizer
from schemas.resident_id import scrub

log = logging.getLogger(__name__)

DEFAULT_MAX_PDU = 65536
DEFAULT_MAX_ASSOCIATIONS = 8
#: Per calling AE title and per source address: half the slots, the other half stay free for other callers.
DEFAULT_MAX_ASSOCIATIONS_PER_CALLER = 4
#: Seconds an established association may stay silent before it is aborted.
DEFAULT_NETWORK_TIMEOUT = 60.0
#: Seconds to wait for an A-ASSOCIATE-RQ, and for the transport to close after a rejection (ARTIM).
DEFAULT_ACSE_TIMEOUT = 30.0
#: Seconds to wait for the rest of a DIMSE message.
DEFAULT_DIMSE_TIMEOUT = 60.0


class _QuickAckSocket(socket.socket):
    """An accepted socket that re-arms TCP_QUICKACK after every read (Linux clears it again by itself)."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        try:
            self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass
        return data


class NoDelayAssociationServer(TunedAssociationServer):
    """The SCP's association server: pynetdicom's threaded server, tuned (:mod:`.pynetdicom_compat`), with
    socket options for C-STORE throughput.

    TCP_NODELAY makes our own PDUs leave at once. TCP_QUICKACK (Linux) acknowledges the sender's segments at
    once: a sender that leaves Nagle on (dcmtk with ``TCP_NODELAY=0``) otherwise waits for our delayed ACK
    before the last small segment of every message.
    """

    tcp_nodelay = True

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        if not self.tcp_nodelay:
            return client, address
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket
            return client, address
        if hasattr(socket, "TCP_QUICKACK") and type(client) is socket.socket:
            timeout = client.gettimeout()
            quick = _QuickAckSocket(client.family, client.type, client.proto, fileno=client.detach())
            quick.settimeout(timeout)
            quick.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            return quick, address
        return client, address


class PlainAssociationServer(NoDelayAssociationServer):
    """For measurements only: pynetdicom's default socket options (Nagle on)."""

    tcp_nodelay = False


@dataclass
class Retrieval:
    """Where a published study can be retrieved (the event's ``retrieval``): a PACS AE and/or WADO-RS URL.

    ``wado_rs`` may contain ``{study}``, replaced by the StudyInstanceUID. Without an AE title, the pointer
    names the AE that sent the study and its address (port unknown).
    """

    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    wado_rs: str | None = None

    def __call__(self, records: Sequence[InstanceRecord]) -> dict[str, Any] | None:
        study = records[0].study_instance_uid if records else ""
        wado = self.wado_rs.replace("{study}", study) if self.wado_rs else None
        if self.ae_title:
            return {"ae_title": self.ae_title, "host": self.host, "port": self.port, "wado_rs": wado}
        sender = next((r for r in records if r.calling_ae), None)
        if sender is None and wado is None:
            return None
        return {"ae_title": sender.calling_ae if sender else None, "host": sender.peer_host if sender else None,
                "port": None, "wado_rs": wado}


@dataclass
class ReceiverStats:
    stored: int = 0
    duplicates: int = 0
    refused: int = 0  # 0xA700
    failed: int = 0  # 0xA900 / 0xCxxx
    by_study: dict[str, dict[str, int]] = field(default_factory=dict)

    def note(self, study_uid: str | None, outcome: str) -> None:
        if study_uid:
            counts = self.by_study.setdefault(study_uid, {})
            counts[outcome] = counts.get(outcome, 0) + 1


@dataclass
class StoreHandler:
    """The C-STORE handler: decode → metadata record → durable spool → status."""

    spool: Spool
    pseudonymizer: Pseudonymizer
    patient_id_is_resident_id: bool = False
    refuse_while: Callable[[], str | None] = lambda: None  # a reason to answer 0xA700, or None
    stats: ReceiverStats = field(default_factory=ReceiverStats)

    def __call__(self, event: evt.Event) -> Dataset | int:
        status = self.store(event)
        metrics.answered("dicom", status if isinstance(status, int) else int(status.Status))
        return status

    def store(self, event: evt.Event) -> Dataset | int:
        """The C-STORE's status (a Dataset with an ErrorComment for a refusal)."""
        study_uid = None
        ids: dict[str, str] = {"door": "dicom"}  # the study's and the instance's UIDs once decoded
        try:
            reason = self.refuse_while()
            if reason:
                raise SpoolUnavailable(reason)
            encoded = event.request.DataSet.getvalue()  # type: ignore[union-attr]
            ds = decode(encoded, event.context.transfer_syntax)
            study_uid = str(ds.get("StudyInstanceUID") or "") or None
            record = instance_record(ds, self.pseudonymizer, context_sop_class=event.context.abstract_syntax,
                                     patient_id_is_resident_id=self.patient_id_is_resident_id)
            affected = event.request.AffectedSOPInstanceUID
            if affected and str(affected) != record.sop_instance_uid:
                raise DicomError(STATUS_SOP_CLASS_MISMATCH, "SOPInstanceUID differs from the request's")
            ids.update(message_id=record.study_instance_uid, instance=record.sop_instance_uid)
            record.calling_ae = str(event.assoc.requestor.ae_title).strip() or None
            record.peer_host = event.assoc.requestor.address
            del ds, encoded
            added = self.spool.add(record)
        except DicomError as exc:
            self.stats.failed += 1
            self.stats.note(study_uid, "failed")
            log.warning("C-STORE from %s refused 0x%04X: %s", _peer(event), exc.status, exc.comment, extra=ids)
            return _status(exc.status, exc.comment)
        except SpoolUnavailable as exc:
            self.stats.refused += 1
            self.stats.note(study_uid, "refused")
            log.warning("C-STORE from %s refused 0xA700: %s", _peer(event), scrub(str(exc)), extra=ids)
            return _status(STATUS_OUT_OF_RESOURCES, str(exc))
        except Exception as exc:
            self.stats.failed += 1
            self.stats.note(study_uid, "failed")
            log.exception("C-STORE from %s failed unexpectedly", _peer(event), extra=ids)
            return _status(STATUS_CANNOT_UNDERSTAND, f"internal error: {type(exc).__name__}")
        log.debug("C-STORE from %s: %s", _peer(event), "spooled" if added else "a resend, spooled before",
                  extra=ids)
        if added:
            metrics.SPOOL_INSTANCES.inc()
            self.stats.stored += 1
            self.stats.note(study_uid, "stored")
        else:
            self.stats.duplicates += 1
            self.stats.note(study_uid, "duplicate")
        return 0x0000


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = scrub(comment).replace("\\", "/")[:64]
    return status


def _peer(event: evt.Event) -> str:
    try:
        return f"{str(event.assoc.requestor.ae_title).strip()}@{event.assoc.requestor.address}"
    except Exception:  # noqa: BLE001
        return "?"


class BrokerWatch:
    """Tracks since when the broker is unreachable (TCP probe once a second plus the assembler's failures)."""

    def __init__(self, bootstrap: str | None, assembler: StudyAssembler | None, grace: float | None,
                 interval: float = 1.0) -> None:
        self.bootstrap = bootstrap
        self.assembler = assembler
        self.grace = grace
        self.interval = interval
        self.down_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.grace is None or not self.bootstrap:
            return
        self.probe()
        self._thread = threading.Thread(target=self._run, name="dicom-broker-watch", daemon=True)
        self._thread.start()

    def probe(self) -> None:
        up = broker_reachable(self.bootstrap or "", timeout=min(1.0, self.interval))
        if up and (self.assembler is None or self.assembler.stats.broker_down_since is None):
            self.down_since = None
        elif self.down_since is None:
            self.down_since = time.time()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.probe()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def refusal(self) -> str | None:
        if self.grace is None or self.down_since is None:
            return None
        down = time.time() - self.down_since
        if down >= self.grace:
            return f"broker unreachable for {down:.0f}s"
        return None


@dataclass
class ScpConfig:
    ae_title: str = "HRX"
    host: str = "0.0.0.0"
    port: int = 11112
    allow_ae: Sequence[str] = ()  # calling AE titles bound to the SCP's institution, from any address
    allow: AllowList | None = None  # the doors' allow-list (adapters.doors); with allow_ae empty and this None: open
    ssl_context: ssl.SSLContext | None = None  # DICOM over TLS (adapters.tls.server_context)
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS
    max_associations_per_ae: int = DEFAULT_MAX_ASSOCIATIONS_PER_CALLER
    max_associations_per_address: int = DEFAULT_MAX_ASSOCIATIONS_PER_CALLER
    max_pdu: int = DEFAULT_MAX_PDU
    stable_seconds: float = 30.0
    broker_grace: float | None = None  # None: the spool alone decides (never refuse for the broker)
    patient_id_is_resident_id: bool = False
    tcp_nodelay: bool = True
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT
    acse_timeout: float = DEFAULT_ACSE_TIMEOUT
    dimse_timeout: float = DEFAULT_DIMSE_TIMEOUT


class DicomReceiver:
    """Storage SCP + spool + study assembler + broker watch, started and stopped together."""

    def __init__(self, config: ScpConfig, spool: Spool, pipeline: ResultPipeline, institution: str,
                 retrieval: Retrieval | None = None, bootstrap: str | None = None) -> None:
        if config.max_pdu <= 0:
            raise ValueError("the maximum PDU size must be bounded (non-zero)")
        if min(config.network_timeout, config.acse_timeout, config.dimse_timeout) <= 0:
            raise ValueError("the network, ACSE and DIMSE timeouts must be positive (never unbounded)")
        pipeline.check_institution(institution)
        self.config = config
        self.spool = spool
        self.assembler = StudyAssembler(spool, pipeline, institution, config.stable_seconds,
                                        retrieval or Retrieval())
        self.watch = BrokerWatch(bootstrap or (pipeline.publisher.bootstrap if pipeline.publisher else None),
                                 self.assembler, config.broker_grace)
        self.handler = StoreHandler(spool, pipeline.pseudonymizer, config.patient_id_is_resident_id,
                                    self.watch.refusal)
        self.limits = CallerLimits(config.max_associations_per_ae, config.max_associations_per_address)
        self.door = CallerDoor(institution, config.allow, tuple(config.allow_ae))
        self.admission = Admission(self.door, self.limits)
        self.ae = AE(ae_title=config.ae_title)
        self.ae.maximum_pdu_size = config.max_pdu
        self.ae.maximum_associations = config.max_associations
        self.ae.network_timeout = config.network_timeout
        self.ae.acse_timeout = config.acse_timeout
        self.ae.dimse_timeout = config.dimse_timeout
        contexts = [*StoragePresentationContexts]
        for cx in contexts:
            cx.transfer_syntax = list(ALL_TRANSFER_SYNTAXES)
        self.ae.supported_contexts = contexts
        self.ae.add_supported_context(Verification)
        self._server: ThreadedAssociationServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self, assemble: bool = True) -> Self:
        server_class = NoDelayAssociationServer if self.config.tcp_nodelay else PlainAssociationServer
        self._server = start_server(self.ae, (self.config.host, self.config.port),
                                    [(evt.EVT_REQUESTED, self.admission.on_requested),
                                     (evt.EVT_C_STORE, self.handler)], server_class, self.config.ssl_context)
        self.watch.start()
        if assemble:
            worker = threading.Thread(target=self.assembler.run, args=(self._stop,), name="dicom-assembler",
                                      daemon=True)
            worker.start()
            self._threads.append(worker)
        announce("dicom", self.door.institution, self.door.source, len(self.door.callers or ()))
        log.info("DICOM SCP %s listening on %s:%d (%s, max PDU %d, max %d associations, %d per calling AE title, "
                 "%d per address, idle timeout %.0fs, ACSE timeout %.0fs, calling AE titles %s, study stable "
                 "after %.1fs)", self.config.ae_title, self.config.host, self.port,
                 "plain TCP" if self.config.ssl_context is None else "TLS", self.config.max_pdu,
                 self.config.max_associations, self.config.max_associations_per_ae,
                 self.config.max_associations_per_address, self.config.network_timeout, self.config.acse_timeout,
                 "any" if self.door.callers is None else ",".join(sorted({c.ae_title for c in self.door.callers})),
                 self.config.stable_seconds)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.watch.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for thread in self._threads:
            thread.join(10)
        self._threads.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The receiver: one message in, one :class:`Outcome` (and the ACK to send) out.

decode (:mod:`.charset`) → parse MSH and check it (:mod:`.header`) → control ID check (:mod:`.journal`) →
reports (:mod:`.oru`) → the shared result pipeline (map, pseudonymize, validate) → physical bounds
(:mod:`codes.bounds`) → report conflict check (:mod:`.conflicts`) → publish, acknowledged by Kafka →
journal → ACK (:mod:`.ack`). :class:`Hl7Receiver` is the MLLP server's frame handler (:mod:`.mllp`) and
serves file mode too; it never raises.

Rules implemented (docs/rules.md, "Delivery", "Privacy"):

- A positive ACK only after ``ResultPipeline.publish`` returned (Kafka acknowledged every event of the
  message) and the reports' digests are fsynced to the journal; broker down, a journal that cannot commit
  or an internal error: AE/CE with ERR-3 207 (resend later), never journaled.
- A resend (same MSH-3, MSH-4, MSH-10 and content) is published again — the memory-only embedded broker
  may have lost the first copy; the store's natural key absorbs a second one — and only then gets the
  stored ACK replayed; if the publish fails it is refused like any message while the broker is away. The
  same control ID with other content is refused: AE/CE, ERR-3 205 at MSH-10, nothing published.
- A report whose key (issuer, OBR-3 else OBR-2, version) was accepted before with other content is
  refused: AE/CE, ERR-3 205 at OBR-3 (or OBR-2), nothing of the message published. The same content is a
  duplicate: published again and accepted.
- A quantity outside its item's physical bounds, in the item's unit after mapping, is refused (AE/CE,
  ERR-3 102 at OBX-5).
- A message larger than ``max_bytes`` is refused with AE from its head alone (the MSH segment is there).
- Concurrent deliveries of one control ID, and of messages holding one report key, are serialised in this
  process; no other lock is held across the Kafka wait, so other messages are in flight together.
- Everything logged passes :func:`schemas.resident_id.scrub`.
- The door (docs/rules.md, "Network doors"): on the MLLP listener, a message whose MSH-4 is not bound to the
  sender's address for this institution is refused with AR, ERR-3 103 at MSH-4, before anything is parsed
  further or published (:mod:`.door`). File mode is not a network door: it is not checked.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import sqlite3
import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from adapters import metrics
from adapters.hl7.ack import ack_code, ack_wanted, build_ack
from adapters.hl7.charset import decode, header_text, reply_codec
from adapters.hl7.conflicts import content_digest, report_key
from adapters.hl7.door import Hl7Door
from adapters.hl7.exceptions import Hl7Error
from adapters.hl7.header import Header, check_header, parse_header
from adapters.hl7.journal import AckJournal, ReportKey, StoredReport
from adapters.hl7.mllp import DEFAULT_MAX_BYTES, HEAD_BYTES, Frame, Peer
from adapters.hl7.oru import ReportOrigin, parse_reports, report_origins
from adapters.hl7.segments import ParsedMessage
from adapters.report import AdapterError, Code, ImagingReport, LabReport
from adapters.pipeline import ResultPipeline
from adapters.pseudonymize import Pseudonymizer
from adapters.publish import BrokerUnavailable, Publisher
from codes import CodeBook
from schemas.resident_id import scrub

log = logging.getLogger(__name__)

_SCHEMA_OBSERVATION = re.compile(r"\$\.observations\[(\d+)\]")


class _KeyLocks:
    """Serialises concurrent work on the same key (a control ID, a report key) inside this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Hashable, list[Any]] = {}

    @contextmanager
    def hold_all(self, keys: Iterable[Any]) -> Iterator[None]:
        """Hold every key's lock, taken in sorted order so that two holders never wait for each other."""
        with ExitStack() as stack:
            for key in sorted(set(keys)):
                stack.enter_context(self.hold(key))
            yield

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._lock:
            entry = self._held.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._held[key]


@dataclass(frozen=True)
class Outcome:
    """What happened to one message: the ACK code (AA, AE, … or CA, CE, …), its text, the bytes to send."""

    code: str
    text: str
    ack: bytes | None
    control_id: str | None = None
    duplicate: bool = False
    published: int = 0
    error: Hl7Error | None = None

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")


class Hl7Receiver:
    """Message in, Outcome out: decode → parse → dedupe → pipeline → publish (acked) → journal → ACK.

    Used by the MLLP server (as its frame handler) and by file mode; it never raises.
    """

    def __init__(self, institution: str, book: CodeBook, pseudonymizer: Pseudonymizer, publisher: Publisher,
                 journal: AckJournal | None = None, *, processing_ids: Sequence[str] = ("P",),
                 facilities: Sequence[str] = (), max_bytes: int = DEFAULT_MAX_BYTES,
                 door: Hl7Door | None = None) -> None:
        self.institution = institution
        self.door = door or Hl7Door(institution, None)
        if self.door.institution != institution:
            raise ValueError(f"the door is {self.door.institution}'s, the receiver {institution}'s")
        self.book = book
        self.pseudonymizer = pseudonymizer
        self.publisher = publisher
        self.journal = journal
        self.processing_ids = tuple(p.upper() for p in processing_ids)
        self.facilities = tuple(facilities)
        self.max_bytes = max_bytes
        self._locks = _KeyLocks()  # control IDs
        self._report_locks = _KeyLocks()  # report keys, taken while holding a control ID's lock, never before
        ResultPipeline(book, pseudonymizer).check_institution(institution)

    # the MLLP frame handler
    def __call__(self, frame: Frame, peer: Peer | None = None) -> bytes | None:
        if frame.oversize:
            outcome = self.oversize(frame.payload, frame.size)
        else:
            outcome = self.handle(frame.payload, peer.host if peer else None)
        if outcome.code:  # an ACK sent back is not itself acknowledged
            metrics.answered("hl7v2", outcome.code)
        self._log(peer, outcome)
        return outcome.ack

    def _log(self, peer: Peer | None, outcome: Outcome) -> None:
        level = logging.INFO if outcome.accepted or not outcome.code else logging.WARNING
        if not log.isEnabledFor(level):  # scrubbing costs regex passes per message; skip it when not logged
            return
        where = f" at {outcome.error.location}" if outcome.error and outcome.error.location else ""
        log.log(level, "hl7 %s: control=%s %s%s%s: %s", peer or "-", scrub(outcome.control_id or "-"), outcome.code or "-",
                " (duplicate, republished, stored ACK replayed)" if outcome.duplicate else "", where,
                scrub(outcome.text), extra={"door": "hl7v2", "message_id": outcome.control_id})

    def _refuse(self, header: Header | None, error: Hl7Error, codec: str) -> Outcome:
        code = ack_code(header, "reject" if error.reject else "error")
        ack = build_ack(header, code, error, codec, self.institution) if ack_wanted(header, False) else None
        return Outcome(code, scrub(error.message), ack, header.control_id if header else None, error=error)

    def oversize(self, head: bytes, size: int) -> Outcome:
        """Refuse a message of ``size`` bytes, over the limit, known only by its ``head`` (AE, ERR-3 207)."""
        header, codec = None, "utf-8"
        try:
            head_text = header_text(head)
            codec = reply_codec(head_text)
            header = parse_header(head_text)[1]
        except Hl7Error:
            pass
        return self._refuse(header, Hl7Error(f"message of {size} bytes exceeds the limit of {self.max_bytes} bytes; "
                                             "split it into several messages", None, "207"), codec)

    def handle(self, payload: bytes, sender: str | None = None) -> Outcome:
        """One message's bytes in, its outcome (and the ACK to send, if any) out; never raises. ``sender``: the
        address it came from over MLLP, checked against the door (None: a file, not checked)."""
        if len(payload) > self.max_bytes:
            return self.oversize(payload[:HEAD_BYTES], len(payload))
        header: Header | None = None
        codec = "utf-8"
        try:
            text, codec = decode(payload)
            message, header = parse_header(text)
            if header.message_type == "ACK":
                return Outcome("", "an acknowledgement: not acknowledged", None, header.control_id)
            check_header(header, self.processing_ids, self.facilities)
            if sender is not None:
                self.door.check(header, sender)
        except Hl7Error as error:
            return self._refuse(header, error, codec)
        except Exception as exc:  # noqa: BLE001 - never let one message take the listener down
            log.error("hl7: header handling failed: %s", scrub(repr(exc)))
            return self._refuse(header, Hl7Error("internal error reading the message header", None, "207"), codec)
        with self._locks.hold(header.key):
            return self._process(message, header, codec)

    def _digest(self, message: ParsedMessage) -> str:
        """Keyed HMAC of the message without MSH-7 (a resend carries a new send time, the same content).

        Hashes the normalized text with MSH-7 emptied, plus a final CR: byte for byte what python-hl7's
        ``str(message)`` gave before (digests already in the journal still match their resends).
        """
        text = message.text
        f = text[3]
        end = text.find("\r")
        head, rest = (text, "") if end < 0 else (text[:end], text[end:])
        parts = head.split(f, 7)  # [MSH, MSH-2, MSH-3, …, MSH-7, the rest of MSH]
        if len(parts) > 6:
            parts[6] = ""
        body = f.join(parts) + rest + "\r"
        return hmac.new(self.pseudonymizer.key, b"hrx-hl7-ack:" + body.encode("utf-8"), hashlib.sha256).hexdigest()

    def _process(self, message: ParsedMessage, header: Header, codec: str) -> Outcome:
        digest = self._digest(message)
        stored = self.journal.get(header.key) if self.journal is not None else None
        if stored is not None and stored.digest != digest:
            return self._refuse(header, Hl7Error(
                f"control ID {header.control_id} (MSH-10) was used before by this sender (MSH-3, MSH-4) for a message "
                "with other content: nothing of this message was stored; send it under a new control ID",
                "MSH^1^10", "205"), codec)
        pipeline = ResultPipeline(self.book, self.pseudonymizer, self.publisher)
        try:
            reports = parse_reports(message, header, self.institution, self._is_imaging_service)
            built = [self._event(pipeline, r) for r in reports]
            origins = report_origins(message)
        except Hl7Error as error:
            return self._refuse(header, error, codec)
        except Exception as exc:  # noqa: BLE001
            log.error("hl7: building events failed: %s", scrub(repr(exc)))
            return self._refuse(header, Hl7Error("internal error building the result events", None, "207"), codec)
        accepted = {report_key(event): StoredReport(content_digest(event, with_reported_at=origin.result_time_sent),
                                                    event["patient"]["key_id"])
                    for event, origin in zip(built, origins)}
        with self._report_locks.hold_all(accepted):
            refusal, new = self._conflict(built, origins, accepted)
            if refusal is None:
                refusal = self._commit(pipeline, built, new)
        if refusal is not None:
            return self._refuse(header, refusal, codec)
        if stored is not None:  # a resend, published again: now its ACK may be replayed
            return Outcome(stored.code, "duplicate: published again, the stored acknowledgement is replayed",
                           stored.ack if ack_wanted(header, True) else None, header.control_id, duplicate=True,
                           published=len(built))
        code = ack_code(header, "accept")
        text = f"{len(built)} result(s) committed"
        ack = build_ack(header, code, None, codec, self.institution, text)
        if self.journal is not None:
            try:
                self.journal.put(header.key, digest, code, ack)
            except sqlite3.Error as exc:  # a resend is then processed as a new message
                log.error("hl7: ACK journal write failed (a resend would get a new ACK): %s", exc)
        return Outcome(code, text, ack if ack_wanted(header, True) else None, header.control_id,
                       published=len(built))

    def _conflict(self, built: list[dict[str, Any]], origins: list[ReportOrigin], accepted: dict[ReportKey, StoredReport]
                  ) -> tuple[Hl7Error | None, dict[ReportKey, StoredReport]]:
        """The refusal for the first report whose key was accepted before with other content, if any, and the
        reports not yet journaled (a duplicate's are: it costs no journal write)."""
        if self.journal is None:
            return None, {}
        try:
            known = self.journal.reports(list(accepted))
        except sqlite3.Error as exc:
            log.error("hl7: report journal read failed: %s", exc)
            return Hl7Error("the exchange cannot check this message against the reports already accepted right "
                            "now; nothing was stored, resend later", None, "207"), {}
        new = {key: report for key, report in accepted.items()
               if key not in known or known[key].key_id != report.key_id}
        for event, origin in zip(built, origins):
            key = report_key(event)
            before = known.get(key)
            if key in new or before is None or before.digest == accepted[key].digest:
                continue
            field = "OBR-3" if origin.number_location.endswith("^3") else "OBR-2"
            advice = ("send a corrected result (OBR-25 C) with a newer time (OBR-22)" if event["status"] != "preliminary"
                      else "a preliminary result is not replaced under the same number: send the final result "
                           "(OBR-25 F), or a corrected result (OBR-25 C) with a newer time (OBR-22)")
            return Hl7Error(f"report {event['result_id']} ({field}, version {event['version']}) conflicts with the "
                            f"report already accepted under this number and version; {advice}",
                            origin.number_location, "205"), {}
        return None, new

    def _commit(self, pipeline: ResultPipeline, built: list[dict[str, Any]],
                new: dict[ReportKey, StoredReport]) -> Hl7Error | None:
        """Publish (Kafka acknowledges every event), then record the new reports durably; the refusal if either
        fails."""
        try:
            pipeline.publish(built)
        except BrokerUnavailable as exc:
            log.warning("hl7: broker unavailable: %s", scrub(str(exc)))
            return Hl7Error("the exchange cannot commit results right now (message broker unavailable); nothing "
                            "was stored, resend later", None, "207")
        except Exception as exc:  # noqa: BLE001
            log.error("hl7: publishing failed: %s", scrub(repr(exc)))
            return Hl7Error("internal error while committing; nothing acknowledged, resend later", None, "207")
        if self.journal is not None:
            try:
                self.journal.record_reports(new)
            except sqlite3.Error as exc:  # published, but a later conflict could not be told: not acknowledged
                log.error("hl7: report journal write failed: %s", exc)
                return Hl7Error("internal error while committing (journal); nothing acknowledged, resend later",
                                None, "207")
        return None

    def _is_imaging_service(self, codes: Sequence[Code]) -> bool:
        """Whether an OBR-4 maps to a unified imaging item in this institution's imaging mapping table."""
        return self.book.map_study(self.institution, [(c.code, c.system) for c in codes], modality=None,
                                   body_part=None, technique=None) is not None

    def _event(self, pipeline: ResultPipeline, report: LabReport | ImagingReport) -> dict[str, Any]:
        try:
            if isinstance(report, ImagingReport):
                return pipeline.imaging_event(report, "hl7v2")
            event = pipeline.lab_event(report, "hl7v2")
        except Hl7Error:
            raise
        except AdapterError as exc:
            location = exc.location
            match = _SCHEMA_OBSERVATION.search(exc.message)
            if match and isinstance(report, LabReport) and int(match.group(1)) < len(report.observations):
                location = report.observations[int(match.group(1))].location or location
            if exc.code == "value" and location and location.startswith("OBX^"):
                location += "^5"  # the pipeline names the observation; its value is OBX-5
            hl7_code = "103" if exc.code == "not-found" else "102"
            raise Hl7Error(exc.message, location, hl7_code) from None
        return event


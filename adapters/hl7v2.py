"""HL7 v2 lab results: ORU^R01 (v2.3 – v2.5.1) over MLLP or from files → the shared result pipeline.

Library: python-hl7 (``import hl7``) undoes the escape sequences and reads time stamps. python-hl7 was chosen
over hl7apy because it is maintained, dependency-free, tolerant of the loosely profiled messages Chinese LIS
send, and ~30× faster (hl7apy 1.3.5 builds a validated object per element: 12–18 ms per message). The
segment → field → repetition → component → subcomponent split itself is done here, on decoded text, by the
rules python-hl7's parser follows (:func:`_split_segments`, :meth:`_Seg.reps`; a test checks that every
field of the sample messages reads the same both ways): python-hl7 builds a container object for every
element of the message up front, ~0.8–1.3 ms per ORU^R01 here, more than the rest of the receiver's own work
together, whereas this module reads a fraction of the fields, splits each only when it first reads it
(~0.05 ms per message for segments and MSH) and parses each message once. Bytes are only ever cut into
messages (MLLP blocks, MSH-started groups in batch files), never into fields. This module validates what
the exchange relies on itself, with errors that name the segment and field.

Rules implemented:

- Message: ``ORU^R01`` only (AR, ERR-3 200/201 otherwise; incoming ACKs are never acknowledged); MSH-12
  2.3, 2.3.1, 2.4, 2.5 or 2.5.1 (AR 203); MSH-11 processing ID ``P`` unless configured (AR 202). Segment
  order: MSH first, then per patient PID, then per report OBR followed by its OBX (error 100 otherwise);
  OBX after an SPM are specimen observations and are skipped; NTE, ORC, PV1, Z-segments etc. are ignored.
- One :class:`~adapters.pipeline.LabReport` per OBR; a message is all-or-nothing (every report maps and
  validates, then all are published together).
- Issuer: the listener's ``--institution`` (a listener serves one hospital); ``--facility`` optionally
  pins MSH-4. Result ID: OBR-3 (filler order number), else OBR-2 (placer order number); two OBR of one
  message with the same ID are refused (205) rather than silently collapsed by the store's natural key.
- Status and version. OBX-11/OBR-25: P (and R, S, I, A) → preliminary v1; F (and U) → final v2; C →
  corrected, X → cancelled, W (wrong patient) → entered-in-error; D, Y, Z are refused (103). HL7 v2 has no
  version field, so a correction or cancellation is ordered by its result time (OBR-22, else MSH-7):
  version = 3 + 2 × minutes since 2000-01-01 UTC (+1 for a cancellation) — a new version, never a
  duplicate, and a second correction issued later is newer than the first (:func:`report_version`). OBR-25 is authoritative for the report; OBX-11 can only *raise* it, and
  only when every OBX agrees (a sender that forgot to update OBR-25 on a correction), never lower it.
  Without OBR-25: the common OBX-11, or the highest when they differ. An OBX marked X/W carries no value.
  A stale resend never overwrites a newer version: the store keeps the head at the highest version.
  Limitation: two corrections of one report with the same result time (to the minute) are one version.
- Values (OBX-2): NM (also ``<0.5``-style comparators, which LIS often put in NM), SN (comparator +
  number → quantity; ranges and ratios such as ``1:40`` → text), ST/TX/FT → text, CE/CWE/CNE → coded;
  ED/RP (attachments) are skipped. OBX-6 units (common spellings normalised to UCUM: ``10^9/L`` →
  ``10*9/L``, ``µmol/L`` → ``umol/L``, ``IU`` → ``[IU]``), OBX-7 reference ranges (``3.9-6.1``,
  ``3.9~6.1``, ``<5``, ``≥1``, free text), OBX-8 abnormal flags (``↑``/``↓`` → H/L).
- Patient: the resident ID (居民身份证号) is the PID-3 repetition whose identifier type (CX.5) is
  ``NNCHN`` or whose assigning authority (CX.4) is OID 2.16.156.10011.1.3; missing → 101, invalid (GB
  11643 check) → 102, both naming PID-3 and the repetition. It is pseudonymized by the pipeline and never
  logged: everything logged passes :func:`schemas.resident_id.scrub`, python-hl7's own warnings (which echo
  field content) are reduced to their templates.
- Time stamps (YYYYMMDD[HHMM[SS[.S]]][±ZZZZ]) without an offset are China Standard Time (+08:00, no DST
  since 1991). reported_at: OBR-22, else MSH-7; collected_at: OBR-7, else SPM-17.
- Character sets: MSH-18 ``UNICODE UTF-8``/``UTF-8``; ``GB 18030-2000``, ``GB18030``, ``GBK``,
  ``GB2312``, ``CHINESE``, ``ISO IR58`` → decoded as GB18030 (a superset of GBK and GB 2312); ``8859/1``;
  empty or ``ASCII`` → UTF-8 when the bytes are valid UTF-8, else GB18030 (undeclared GBK is common). A
  message declared GB* whose bytes are valid non-ASCII UTF-8 is read as UTF-8 (GBK text is practically
  never valid UTF-8; mislabelled interface engines are); one declared UTF-8 that is not is refused (102).
  MSH-18 itself is read from the MSH segment alone, decoded first as UTF-8 and then as GB18030 (a GBK
  trail byte may be 0x7C ``|``, so raw bytes are never split). The ACK is encoded in the same charset.

Acknowledgements (DOMAIN.md §8):

- A positive ACK (AA, or CA in enhanced mode) is sent only after Kafka acknowledged every event of the
  message (``ResultPipeline.publish`` returned). Content errors: AE + ERR; unsupported type, event, version
  or processing ID: AR; broker down or internal error: AE with ERR-3 207 (resend later), never journaled.
  A message larger than ``max_bytes`` is read to its end, discarded and refused with AE (ERR-8 gives the
  size and the limit); the connection stays usable.
- ERR (v2.5 style): ERR-2 location ``SEG^seq^field[^repetition]``, ERR-3 HL7 table 0357 code, ERR-4
  severity E, ERR-8 user message; for v2.3/2.4 senders ERR-1 (ELD) is filled as well; MSA-3 repeats the
  text.
- Enhanced mode (MSH-15 or MSH-16 valued): MSH-15 AL/ER/SU/NE picks when an *accept* ACK is sent. CA =
  committed, i.e. acknowledged by Kafka (so exactly when AA would be sent); CR = the message can never be
  accepted by this receiver as sent (type, event, version, processing ID); CE = everything else that is not
  committed (content errors, size, broker down: "cannot accept for any other reason"). Committing to Kafka is
  all this receiver does, so no separate application ACK follows; if only MSH-16 is valued the
  AA/AE/AR answer is sent at once on the same connection under MSH-16's condition.
- Duplicates: key (MSH-3, MSH-4, MSH-10). The positive ACK is recorded in :class:`AckJournal` (SQLite, WAL,
  group-committed) after the publish and before it is sent; a resend with the same key *and content*
  (keyed HMAC over the message without MSH-7) gets the stored bytes replayed and publishes nothing. Same key
  with different content (a LIS that reset its counter) is processed as a new message and logged. Refusals
  are not journaled, so a message refused while the broker was down is processed when resent. A crash
  between publish and journal write only causes a republish, which the store's natural key absorbs.
  The journal is not where results are made durable (Kafka is, before any positive ACK), so the ACK does
  not wait for its commit, let alone an fsync: see :class:`AckJournal`.

Threading model: see :mod:`adapters.mllp` (thread per connection, bounded).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import re
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import hl7 as hl7lib
from hl7 import containers as _hl7_containers
from hl7 import parser as _hl7_parser
from hl7 import util as _hl7_util

from adapters import mllp
from adapters.pipeline import AdapterError, Code, LabObservation, LabReport, Patient, ResultPipeline, Value
from adapters.publish import BrokerUnavailable
from schemas.resident_id import InvalidResidentId, normalize_resident_id, scrub
from codes.calendar import BEIJING
from codes.loinc import is_loinc_system
from schemas.statuses import STATUS_RANK

log = logging.getLogger(__name__)

#: China Standard Time: HL7 time stamps without an offset are read in this zone.
SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
RESIDENT_ID_TYPE = "NNCHN"  # HL7 table 0203: national person identifier, China
RESIDENT_ID_OID = "2.16.156.10011.1.3"  # 中华人民共和国居民身份证号码
DEFAULT_MAX_BYTES = mllp.DEFAULT_MAX_BYTES

#: HL7 table 0357 (message error condition codes) used here.
ERROR_TEXT = {
    "100": "Segment sequence error", "101": "Required field missing", "102": "Data type error",
    "103": "Table value not found", "200": "Unsupported message type", "201": "Unsupported event code",
    "202": "Unsupported processing id", "203": "Unsupported version id", "205": "Duplicate key identifier",
    "207": "Application internal error",
}

_CHARSETS = {
    "UNICODEUTF8": "utf-8", "UTF8": "utf-8", "UNICODE": "utf-8",
    "GB180302000": "gb18030", "GB180302005": "gb18030", "GB18030": "gb18030", "GBK": "gb18030",
    "GB2312": "gb18030", "GB231280": "gb18030", "CHINESE": "gb18030", "ISOIR58": "gb18030", "EUCCN": "gb18030",
    "8859/1": "latin-1", "ISO88591": "latin-1",
}
_AUTO_CHARSETS = ("", "ASCII", "USASCII")

_OBX_STATUS = {"P": "preliminary", "R": "preliminary", "S": "preliminary", "I": "preliminary",
               "F": "final", "U": "final", "C": "corrected", "X": "cancelled", "W": "entered-in-error"}
_OBR_STATUS = {"P": "preliminary", "A": "preliminary", "R": "preliminary", "I": "preliminary",
               "S": "preliminary", "O": "preliminary", "F": "final", "C": "corrected", "X": "cancelled"}
_VERSION_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def report_version(status: str, result_time: datetime) -> int:
    """Preliminary 1, final 2; a correction or cancellation: 3 + 2 × minutes since 2000 (+1 if cancelling).

    Orders repeated corrections by their result time (OBR-22) where HL7 v2 has no version field.
    """
    rank = STATUS_RANK[status]
    if rank < 3:
        return rank
    minutes = int((result_time - _VERSION_EPOCH).total_seconds() // 60)
    return 3 + 2 * minutes + (1 if rank == 4 else 0)
_VOID = ("cancelled", "entered-in-error")
_SEX = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
_FLAGS = {"↑": "H", "↓": "L", "高": "H", "低": "L", "偏高": "H", "偏低": "L", "阳性": "POS", "阴性": "NEG",
          "+": "POS", "-": "NEG"}
_UNITS = {"IU/mL": "[IU]/mL", "IU/L": "[IU]/L", "mIU/mL": "m[IU]/mL", "mIU/L": "m[IU]/L", "uIU/mL": "u[IU]/mL",
          "fl": "fL", "sec": "s", "mmHg": "mm[Hg]", "mm/hr": "mm/h", "g/dl": "g/dL", "mg/dl": "mg/dL"}
_DTM = re.compile(r"^\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,4})?)?)?)?)?)?(?:[+-]\d{4})?$")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_NM_COMPARATOR = re.compile(r"^(<=|>=|<|>|≤|≥|＜|＞|≦|≧)\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))$")
_COMPARATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">=", "≤": "<=", "≥": ">=", "＜": "<", "＞": ">",
                "≦": "<=", "≧": ">="}
_RANGE = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(?:--?|~|～|—|–|－|至)\s*([+-]?\d+(?:\.\d+)?)\s*$")
_BOUND = re.compile(r"^\s*(<=|>=|<|>|≤|≥|＜|＞|≦|≧)\s*([+-]?\d+(?:\.\d+)?)\s*$")
_SCHEMA_OBSERVATION = re.compile(r"\$\.observations\[(\d+)\]")
_SKIPPED_TYPES = ("ED", "RP")
_LINE_BREAKS = re.compile(r"[\r\n]+")
_POWER_START = frozenset("×xX*1")
_UNIT_TIMES = re.compile(r"^[×xX*]\s*(?=10)")
_UNIT_POWER = re.compile(r"^10\^(\d+)")
_UNIT_TEN = re.compile(r"[×xX*]?10")
_UNIT_PER = re.compile(r"\d+/")


class _TemplateOnly(logging.Filter):
    """python-hl7 logs field content in its warnings; keep only the message template (no patient data)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = "python-hl7: " + scrub(str(record.msg)) + " (field content withheld)"
        record.args = None
        return True


for _module in (_hl7_util, _hl7_containers, _hl7_parser):
    logging.getLogger(_module.__file__).addFilter(_TemplateOnly())


class Hl7Error(AdapterError):
    """A refusal: ``hl7_code`` from HL7 table 0357, ``location`` as ``SEG^seq^field[^rep]``; ``reject`` → AR/CR."""

    def __init__(self, message: str, location: str | None = None, hl7_code: str = "102",
                 reject: bool = False) -> None:
        super().__init__(message, location, code="structure" if hl7_code == "100" else "invalid")
        self.hl7_code = hl7_code
        self.reject = reject


# --------------------------------------------------------------------------------------------- charsets


def _header_segment(raw: bytes) -> bytes:
    start = raw.lstrip(b"\r\n\t \xef\xbb\xbf")
    end = min((i for i in (start.find(b"\r"), start.find(b"\n")) if i >= 0), default=len(start))
    return start[:end]


def _header_text(raw: bytes) -> str:
    """The MSH segment as text: UTF-8 if it is valid UTF-8, else GB18030 (never by splitting raw bytes)."""
    head = _header_segment(raw)
    if not head.startswith(b"MSH"):
        raise Hl7Error("the message does not start with an MSH segment", "MSH", "100")
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return head.decode("gb18030", errors="replace")


def charset_of(declared: str) -> str | None:
    """Python codec for an MSH-18 value; None means undeclared (auto: UTF-8, else GB18030)."""
    key = re.sub(r"[\s_\-]", "", declared.upper())
    if key in _AUTO_CHARSETS:
        return None
    if key in _CHARSETS:
        return _CHARSETS[key]
    raise Hl7Error(f"character set {declared!r} is not supported (UNICODE UTF-8, GB 18030-2000, GBK, 8859/1)",
                   "MSH^1^18", "103")


def decode(raw: bytes) -> tuple[str, str]:
    """Decode a message according to its MSH-18; returns (text, codec for the reply)."""
    declared = _msh18(_header_text(raw))
    codec = charset_of(declared)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if codec is None:
        for candidate in ("utf-8", "gb18030"):
            try:
                return raw.decode(candidate), candidate
            except UnicodeDecodeError:
                continue
        raise Hl7Error("the message is neither valid UTF-8 nor GB18030: declare its character set in MSH-18",
                       "MSH^1^18", "102")
    if codec == "gb18030" and not raw.isascii():
        try:  # GBK text is practically never valid UTF-8: this is a mislabelled UTF-8 message
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            log.warning("hl7: MSH-18 declares %s but the message is UTF-8; read as UTF-8", scrub(declared))
            return text, codec
    try:
        return raw.decode(codec), codec
    except UnicodeDecodeError as exc:
        raise Hl7Error(f"byte {exc.start} is not valid {declared} (MSH-18)", "MSH^1^18", "102") from None


def _msh18(header: str) -> str:
    """MSH-18 of the MSH segment alone; "" when it has no usable separators (refused later, with its location)."""
    if len(header) < 4 or header[3].isalnum() or header[3].isspace():
        return ""
    return _split_segments(header)[0].get(18)


# ----------------------------------------------------------------------------------------- tree access


class _Escapes:
    """The two attributes python-hl7's ``unescape`` reads: the escape character and its separator string
    (segment, field, repetition, component, subcomponent: python-hl7's order, not MSH-2's)."""

    __slots__ = ("esc", "separators")

    def __init__(self, esc: str, separators: str) -> None:
        self.esc = esc
        self.separators = separators


class _Seg:
    """One segment with its occurrence number, for HL7-style locations (``OBX^3^5``).

    ``fields`` follows python-hl7's numbering: ``fields[0]`` is the segment name and ``fields[n]`` field n;
    for MSH, ``fields[1]`` is the field separator (MSH-1) and ``fields[2]`` the encoding characters (MSH-2).
    A field is split into repetitions → components → subcomponents and unescaped only when it is first
    read, then kept: the receiver reads a fraction of the fields, several of them more than once.
    """

    __slots__ = ("fields", "name", "seq", "separators", "_escapes", "_reps")

    def __init__(self, fields: list[str], seq: int, seps: str, escapes: _Escapes) -> None:
        self.fields = fields
        self.name = fields[0]
        self.seq = seq
        self.separators = seps  # field, component, repetition, escape, subcomponent (MSH-1 + MSH-2 order)
        self._escapes = escapes
        self._reps: dict[int, list[list[list[str]]]] = {}

    def loc(self, *path: int) -> str:
        where = f"{self.name}^{self.seq}"
        return where + "".join(f"^{p}" for p in path) if path else where

    def raw(self, n: int) -> str:
        """Field ``n`` exactly as sent (escaped), for echoing into the ACK."""
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[list[list[str]]]:
        """Field ``n`` as repetitions → components → subcomponents, unescaped ([] when absent). Shared: read only.

        The same tree python-hl7 builds (HL7 v2 encoding rules: ``~`` between repetitions, ``^`` between
        components, ``&`` between subcomponents, in the message's own MSH-2 characters); escape sequences are
        undone by python-hl7's ``unescape`` after splitting, so an escaped separator never splits anything.
        """
        cached = self._reps.get(n)
        if cached is not None:
            return cached
        if n >= len(self.fields):
            out: list[list[list[str]]] = []
        else:
            _, comp, rep, esc, sub = self.separators
            value = self.fields[n]
            if esc not in value:  # nothing to unescape (the common case): split only
                if comp not in value and rep not in value and sub not in value:
                    out = [[[value]]]
                else:
                    out = [[c.split(sub) for c in r.split(comp)] for r in value.split(rep)]
            else:
                out = [[[self._text(s) for s in c.split(sub)] for c in r.split(comp)] for r in value.split(rep)]
        self._reps[n] = out
        return out

    def _text(self, value: str) -> str:
        if self.separators[3] not in value:  # no escape sequence, hence no \.br\ either
            return value
        text = _hl7_util.unescape(self._escapes, value)
        return text.replace("\r", "\n") if "\r" in text else text

    def get(self, n: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
        reps = self._reps.get(n) or self.reps(n)
        try:
            return reps[rep - 1][comp - 1][sub - 1].strip()
        except IndexError:
            return ""

    def components(self, n: int, rep: int = 1) -> list[str]:
        reps = self._reps.get(n) or self.reps(n)
        if len(reps) < rep:
            return []
        return [c[0].strip() if c else "" for c in reps[rep - 1]]


def _split_segments(text: str) -> list[_Seg]:
    """Cut a message (CR-separated, starting with MSH and its field separator) into segments and fields.

    HL7 v2 encoding rules: segments end with CR; fields are separated by MSH-1; MSH-2 holds the component,
    repetition, escape and subcomponent characters (defaults ``^~\\&`` for missing ones). Works on decoded
    text, so a GBK trail byte equal to ``|`` can never split a field. MSH (and a stray BHS/FHS) is numbered
    as python-hl7 numbers it: MSH-1 is the separator itself.
    """
    f = text[3]
    end = text.find("\r")
    first = text if end < 0 else text[:end]
    enc_end = first.find(f, 4)
    enc = first[4:] if enc_end < 0 else first[4:enc_end]
    seps = f + (enc + "^~\\&"[len(enc):] if len(enc) < 4 else enc[:4])
    escapes = _Escapes(seps[3], "\r" + f + seps[2] + seps[1] + seps[4])
    counts: dict[str, int] = {}
    segments: list[_Seg] = []
    for line in text.split("\r"):
        fields = line.split(f)
        name = fields[0]
        if name in ("MSH", "BHS", "FHS"):
            fields.insert(1, f)
        counts[name] = seq = counts.get(name, 0) + 1
        segments.append(_Seg(fields, seq, seps, escapes))
    return segments


# ----------------------------------------------------------------------------------------------- header


@dataclass(frozen=True)
class Header:
    """What the ACK and the duplicate check need from MSH, kept even when the body is refused."""

    separators: str  # field, component, repetition, escape, subcomponent
    sending_application: str  # raw (escaped) field text
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    control_id: str
    message_type: str
    event: str
    processing_id: str
    version: str
    accept_ack: str
    application_ack: str
    charset: str  # raw MSH-18
    sent_at: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.sending_application, self.sending_facility, self.control_id)

    @property
    def facility_ids(self) -> set[str]:
        sub = self.separators[1]
        return {p for p in self.sending_facility.split(sub)[:2] if p}


@dataclass(frozen=True)
class ParsedMessage:
    """One message cut into segments (:func:`_split_segments`) and the normalized text they were cut from."""

    text: str  # segments separated by single CRs, no trailing CR or whitespace
    segments: list[_Seg]

    @property
    def msh(self) -> _Seg:
        return self.segments[0]


def parse_header(text: str) -> tuple[ParsedMessage, Header]:
    """Cut the whole message into segments and read its MSH; raises Hl7Error when MSH-1/MSH-2 are missing.

    Line endings are normalised (CR, LF and CRLF all end a segment; empty lines are dropped): many LIS write
    files with LF, and a stray blank line is not a segment.
    """
    text = re.sub(r"[\r\n]+", "\r", text.lstrip("\ufeff \t\r\n")).rstrip()
    if not text.startswith("MSH"):
        raise Hl7Error("the message does not start with an MSH segment", "MSH", "100")
    if len(text) < 8 or text[3].isalnum() or text[3].isspace():
        raise Hl7Error("MSH-1/MSH-2 (field separator and encoding characters) are missing", "MSH^1^2", "101")
    message = ParsedMessage(text, _split_segments(text))
    msh = message.msh
    header = Header(
        separators=msh.separators, sending_application=msh.raw(3), sending_facility=msh.raw(4),
        receiving_application=msh.raw(5), receiving_facility=msh.raw(6), control_id=msh.get(10),
        message_type=msh.get(9, comp=1).upper(), event=msh.get(9, comp=2).upper(),
        processing_id=msh.get(11).upper(), version=msh.get(12), accept_ack=msh.get(15).upper(),
        application_ack=msh.get(16).upper(), charset=msh.raw(18), sent_at=msh.get(7))
    return message, header


# ------------------------------------------------------------------------------------------------ body


def _timestamp(seg: _Seg, n: int) -> datetime | None:
    value = seg.get(n)
    if not value:
        return None
    try:
        if not _DTM.match(value):  # python-hl7 alone reads "2024-03-15" as 2024-01-01
            raise ValueError(value)
        moment = hl7lib.parse_datetime(value)
    except (ValueError, TypeError):
        raise Hl7Error(f"{value!r} is not an HL7 time stamp (YYYYMMDD[HHMM[SS]][+ZZZZ])", seg.loc(n), "102") from None
    if moment is None:
        return None
    return moment.replace(tzinfo=BEIJING) if moment.tzinfo is None else moment


def _codes(seg: _Seg, n: int) -> list[Code]:
    """CE/CWE: code^text^system^alternate code^alternate text^alternate system; local codes first."""
    parts = seg.components(n) + [""] * 6
    codes = []
    for code, text, system in ((parts[0], parts[1], parts[2]), (parts[3], parts[4], parts[5])):
        if not code:
            continue
        if len(code) > 64:
            raise Hl7Error(f"code of {len(code)} characters (at most 64)", seg.loc(n), "102")
        system = system.strip()
        codes.append(Code(code, None if system.upper() in ("", "L", "LOCAL") else system, (text or None) and text[:256]))
    return sorted(codes, key=lambda c: is_loinc_system(c.system))


def _patient(pid: _Seg) -> Patient:
    for i, rep in enumerate(pid.reps(3), start=1):
        comps = [c + [""] * 3 for c in rep] + [[""] * 3] * 6
        value = comps[0][0].strip()
        typed = comps[4][0].strip().upper() == RESIDENT_ID_TYPE
        authority = RESIDENT_ID_OID in (s.strip() for s in comps[3])
        if value and (typed or authority):
            try:
                normalize_resident_id(value)
            except InvalidResidentId as exc:
                raise Hl7Error(str(exc), pid.loc(3, i), "102") from None
            birth = pid.get(7)
            return Patient(resident_id=value, sex=_SEX.get(pid.get(8).upper()),
                           birth_year=int(birth[:4]) if birth[:4].isdigit() and 1880 <= int(birth[:4]) <= 2200
                           else None,
                           location=pid.loc(3, i))
    raise Hl7Error(f"PID-3 carries no resident ID (identifier type {RESIDENT_ID_TYPE} or assigning authority "
                   f"{RESIDENT_ID_OID})", pid.loc(3), "101")


def _number(text: str, where: str) -> float:
    if not _NUMBER.match(text):
        raise Hl7Error(f"{text[:40]!r} is not a number", where, "102")
    return float(text)


def ucum_unit(unit: str) -> str | None:
    """Normalise the unit spellings LIS commonly send to the UCUM codes the mapping tables use."""
    unit = unit.strip().replace("µ", "u").replace("μ", "u")
    if not unit:
        return None
    if unit[0] in _POWER_START:  # only "×10^9/L"-style units need the rewrites (most units skip them)
        unit = _UNIT_TIMES.sub("", unit)
        unit = _UNIT_POWER.sub(r"10*\1", unit)
    return _UNITS.get(unit, unit)


def _unit(obx: _Seg) -> str | None:
    comps = obx.components(6) + ["", ""]
    code, text = comps[0], comps[1]
    if _UNIT_TEN.fullmatch(code) and _UNIT_PER.match(text):  # an unescaped "10^9/L"
        code, text = f"{code}^{text}", ""
    unit = ucum_unit(code or text)
    if unit is not None and len(unit) > 64:
        raise Hl7Error("unit longer than 64 characters", obx.loc(6), "102")
    return unit


def _reference(obx: _Seg) -> dict[str, Any]:
    rep_sep = "~"
    text = rep_sep.join("^".join(c[0] for c in rep) for rep in obx.reps(7)).strip()  # "3.9~6.1" arrives as two reps
    if not text:
        return {}
    if m := _RANGE.match(text):
        return {"ref_low": float(m.group(1)), "ref_high": float(m.group(2))}
    if m := _BOUND.match(text):
        bound = "ref_high" if _COMPARATORS[m.group(1)] in ("<", "<=") else "ref_low"
        return {bound: float(m.group(2)), "ref_text": text[:256]}
    return {"ref_text": text[:256]}


def _flag(obx: _Seg) -> str | None:
    for rep in obx.reps(8):
        flag = rep[0][0].strip() if rep and rep[0] else ""
        if flag:
            return _FLAGS.get(flag, flag)[:16]
    return None


def _rep_texts(reps: list[list[list[str]]]) -> list[str]:
    """Each repetition's components joined back with ``^`` (a text value whose sender did not escape ``^``)."""
    return ["^".join(c[0] for c in rep).strip("^ ") for rep in reps]


def _value(obx: _Seg, status: str | None) -> Value | None:
    """The observation value; None for an OBX that is not a result (attachment)."""
    kind = obx.get(2).upper()
    extra: dict[str, Any] = {"unit": _unit(obx), "interpretation": _flag(obx), **_reference(obx)}
    reps = obx.reps(5)
    if status in _VOID:
        return Value("none", **extra)
    if kind in _SKIPPED_TYPES:
        return None
    if kind == "NM":
        text = obx.get(5)
        if not text:
            return Value("none", **extra)
        if m := _NM_COMPARATOR.match(text):
            return Value("quantity", float(m.group(2)), _COMPARATORS[m.group(1)], **extra)
        return Value("quantity", _number(text, obx.loc(5)), **extra)
    if kind == "SN":
        parts = obx.components(5) + ["", "", "", ""]
        comparator, first, separator, second = parts[:4]
        if not any((comparator, first, separator, second)):
            return Value("none", **extra)
        if not separator and not second:
            number = _number(first, obx.loc(5))
            if comparator in ("", "="):
                return Value("quantity", number, **extra)
            if comparator in _COMPARATORS:
                return Value("quantity", number, _COMPARATORS[comparator], **extra)
            if comparator == "<>":
                return Value("text", text=f"<>{first}", **extra)
            raise Hl7Error(f"SN comparator {comparator!r} is not one of > < >= <= = <>", obx.loc(5), "103")
        for part in (first, second):
            if part:
                _number(part, obx.loc(5))
        return Value("text", text=f"{'' if comparator == '=' else comparator}{first}{separator}{second}", **extra)
    if kind in ("ST", "TX", "FT"):
        text = "\n".join(t for t in _rep_texts(reps) if t)
        if len(text) > 4000:
            raise Hl7Error(f"text value of {len(text)} characters (at most 4000)", obx.loc(5), "102")
        return Value("text", text=text, **extra) if text else Value("none", **extra)
    if kind in ("CE", "CWE", "CNE"):
        labels = []
        for rep in reps:
            comps = [c[0].strip() for c in rep] + ["", ""]
            if comps[0] or comps[1]:
                labels.append(comps[1] or comps[0])
        return Value("coded", text="; ".join(labels)[:4000], **extra) if labels else Value("none", **extra)
    if not kind:
        if not any(_rep_texts(reps)):
            return Value("none", **extra)
        raise Hl7Error("OBX-2 (value type) is required when OBX-5 has a value", obx.loc(2), "101")
    raise Hl7Error(f"value type {kind!r} is not supported (NM, SN, ST, TX, FT, CE, CWE, CNE)", obx.loc(2), "103")


def _status(table: dict[str, str], seg: _Seg, n: int) -> str | None:
    code = seg.get(n).upper()
    if not code:
        return None
    if code not in table:
        raise Hl7Error(f"result status {code!r} is not supported ({', '.join(table)})", seg.loc(n), "103")
    return table[code]


def _report_status(obr: _Seg, obx_statuses: list[tuple[_Seg, str | None]]) -> str:
    """OBR-25 is authoritative; a unanimous OBX-11 may raise it, never lower it (see the module docstring)."""
    report = _status(_OBR_STATUS, obr, 25)
    given = [s for _, s in obx_statuses if s is not None]
    unanimous = given[0] if given and len(given) == len(obx_statuses) and len(set(given)) == 1 else None
    if report in _VOID:
        return report
    if unanimous in _VOID:
        return unanimous
    if report is not None:
        if unanimous is not None and STATUS_RANK[unanimous] > STATUS_RANK[report]:
            return unanimous
        return report
    missing = next((seg for seg, s in obx_statuses if s is None), None)
    if missing is not None or not given:
        raise Hl7Error("result status is required in OBX-11 when OBR-25 is empty", missing.loc(11) if missing
                       else obr.loc(25), "101")
    live = [s for s in given if s not in _VOID] or given
    return max(live, key=lambda s: STATUS_RANK[s])


@dataclass
class _Group:
    obr: _Seg
    pid: _Seg
    obx: list[_Seg] = field(default_factory=list)
    spm: _Seg | None = None


def _groups(message: ParsedMessage) -> list[_Group]:
    """Walk the segments in order, enforcing the ORU^R01 structure the exchange relies on."""
    pid: _Seg | None = None
    groups: list[_Group] = []
    for seg in message.segments[1:]:  # after MSH
        name = seg.name
        if name == "MSH":
            raise Hl7Error("a second MSH inside one message: send one message per MLLP block (batches: file mode)",
                           seg.loc(), "100")
        if name in ("FHS", "BHS", "BTS", "FTS"):
            raise Hl7Error(f"{name} (batch envelope) inside a message: batches are accepted in file mode",
                           seg.loc(), "100")
        if name == "PID":
            pid = seg
        elif name == "OBR":
            if pid is None:
                raise Hl7Error("OBR before any PID: the patient must precede the reports", seg.loc(), "100")
            groups.append(_Group(seg, pid))
        elif name == "OBX":
            if not groups:
                raise Hl7Error("OBX before any OBR: every observation belongs to a report", seg.loc(), "100")
            if groups[-1].spm is None:
                groups[-1].obx.append(seg)
        elif name == "SPM":
            if not groups:
                raise Hl7Error("SPM before any OBR", seg.loc(), "100")
            groups[-1].spm = groups[-1].spm or seg
    if pid is None:
        raise Hl7Error("the message has no PID segment", "PID", "100")
    if not groups:
        raise Hl7Error("the message has no OBR segment: nothing to report", "OBR", "100")
    return groups


def _report(group: _Group, header: Header, msh: _Seg, institution: str) -> LabReport:
    obr = group.obr
    result_id = obr.get(3) or obr.get(2)
    if not result_id:
        raise Hl7Error("OBR-3 (filler order number) or OBR-2 (placer order number) is required: it identifies "
                       "the result", obr.loc(3), "101")
    if len(result_id) > 128:
        raise Hl7Error("order number longer than 128 characters", obr.loc(3), "102")
    codes = _codes(obr, 4)
    if not codes:
        raise Hl7Error("OBR-4 (universal service identifier) is required", obr.loc(4), "101")
    statuses = [(obx, _status(_OBX_STATUS, obx, 11)) for obx in group.obx]
    status = _report_status(obr, statuses)
    observations: list[LabObservation] = []
    for obx, obx_status in statuses:
        obs_codes = _codes(obx, 3)
        if not obs_codes:
            raise Hl7Error("OBX-3 (observation identifier) is required", obx.loc(3), "101")
        value = _value(obx, obx_status)
        if value is not None:
            observations.append(LabObservation(obs_codes, value, obx.loc()))
    if not observations:
        if status not in _VOID:
            raise Hl7Error("the report has no OBX result", obr.loc(), "101")
        observations.append(LabObservation(codes, Value("none"), obr.loc()))  # cancelled: what was cancelled
    reported = _timestamp(obr, 22) or _timestamp(msh, 7)
    if reported is None:
        raise Hl7Error("OBR-22 (result time) or MSH-7 (message time) is required", obr.loc(22), "101")
    spm = group.spm
    collected = _timestamp(obr, 7) or (_timestamp(spm, 17) if spm else None)
    specimen_type = (spm.get(4) if spm else "") or obr.get(15)  # v2.5 SPM-4, else v2.3/2.4 OBR-15 (SPS)
    specimen_id = (spm.get(2) or spm.get(2, comp=2)) if spm else ""
    return LabReport(
        institution=institution, result_id=result_id, version=report_version(status, reported), status=status,
        patient=_patient(group.pid), codes=codes, observations=observations, reported_at=reported,
        collected_at=collected, specimen_type=specimen_type[:64] or None, specimen_id=specimen_id[:64] or None,
        message_id=header.control_id or None, location=obr.loc())


def parse_reports(message: ParsedMessage, header: Header, institution: str) -> list[LabReport]:
    """Every report of a parsed ORU^R01, or an Hl7Error naming the first problem (nothing partial)."""
    msh = message.msh
    reports: list[LabReport] = []
    seen: dict[str, str] = {}
    for group in _groups(message):
        report = _report(group, header, msh, institution)
        if report.result_id in seen:
            raise Hl7Error(f"OBR {seen[report.result_id]} and {report.location} carry the same order number",
                           group.obr.loc(3), "205")
        seen[report.result_id] = report.location or ""
        reports.append(report)
    return reports


def parse_message(raw: bytes | str, institution: str) -> tuple[Header, list[LabReport]]:
    """Decode (bytes: by MSH-18), parse and check one ORU^R01; raises Hl7Error."""
    text = decode(raw)[0] if isinstance(raw, bytes) else raw
    message, header = parse_header(text)
    check_header(header)
    return header, parse_reports(message, header, institution)


def check_header(header: Header, processing_ids: Sequence[str] = ("P",), facilities: Sequence[str] = ()) -> None:
    """AR-class checks (type, event, version, processing ID) first, then the AE-class header fields."""
    if header.message_type != "ORU":
        raise Hl7Error(f"message type {header.message_type or '(empty)'} is not supported: send ORU^R01",
                       "MSH^1^9", "200", reject=True)
    if header.event != "R01":
        raise Hl7Error(f"event {header.event or '(empty)'} is not supported: send ORU^R01", "MSH^1^9", "201",
                       reject=True)
    if header.version not in SUPPORTED_VERSIONS:
        raise Hl7Error(f"version {header.version or '(empty)'} is not supported ({', '.join(SUPPORTED_VERSIONS)})",
                       "MSH^1^12", "203", reject=True)
    if header.processing_id[:1] not in processing_ids:
        raise Hl7Error(f"processing ID {header.processing_id or '(empty)'} is not accepted here "
                       f"({', '.join(processing_ids)})", "MSH^1^11", "202", reject=True)
    if not header.control_id:
        raise Hl7Error("MSH-10 (message control ID) is required", "MSH^1^10", "101")
    if len(header.control_id) > 199:
        raise Hl7Error("MSH-10 longer than 199 characters", "MSH^1^10", "102")
    if facilities and not header.facility_ids & set(facilities):
        raise Hl7Error("MSH-4 (sending facility) is not registered for this listener", "MSH^1^4", "103")


# ------------------------------------------------------------------------------------------------- ACKs


_DEFAULT_SEPARATORS = "|^~\\&"


def _escape(text: str, seps: str) -> str:
    """Text for one field of the ACK: separators and the escape character as escape sequences, line breaks
    as a blank (HL7 v2 escape sequences \\F\\ \\S\\ \\R\\ \\T\\ \\E\\)."""
    if not any(ch in text for ch in seps) and "\r" not in text and "\n" not in text:
        return text  # the usual case (control IDs, event codes, "1 result(s) committed")
    f, c, r, e, s = seps
    text = _LINE_BREAKS.sub(" ", text)
    text = text.replace(e, f"{e}E{e}")
    for char, code in ((f, "F"), (c, "S"), (r, "R"), (s, "T")):
        text = text.replace(char, f"{e}{code}{e}")
    return text


def ack_plan(header: Header | None) -> tuple[str, str]:
    """(mode, condition): mode original | accept | application; condition AL | ER | SU | NE (HL7 table 0155)."""
    if header is None or (not header.accept_ack and not header.application_ack):
        return "original", "AL"
    if header.accept_ack and header.accept_ack != "NE":
        return "accept", header.accept_ack
    if header.application_ack and header.application_ack != "NE":
        return "application", header.application_ack
    return "accept", "NE"


def ack_code(header: Header | None, outcome: str) -> str:
    """``outcome`` accept | error | reject → AA/AE/AR, or CA/CE/CR in enhanced mode (accept acknowledgements)."""
    mode, _ = ack_plan(header)
    letter = {"accept": "A", "error": "E", "reject": "R"}[outcome]
    return ("C" if mode == "accept" else "A") + letter


def ack_wanted(header: Header | None, success: bool) -> bool:
    condition = ack_plan(header)[1]
    return {"NE": False, "ER": not success, "SU": success}.get(condition, True)


def build_ack(header: Header | None, code: str, error: Hl7Error | None, codec: str, institution: str,
              text: str = "") -> bytes:
    """The ACK message (MSH, MSA, and ERR for a refusal) in the sender's separators and character set."""
    seps = header.separators if header else _DEFAULT_SEPARATORS
    f, c = seps[0], seps[1]
    version = header.version if header and header.version in SUPPORTED_VERSIONS else "2.5.1"
    event = header.event if header and header.event else "R01"
    msg_type = f"ACK{c}{_escape(event, seps)}" + ("" if version == "2.3" else f"{c}ACK")
    control = ("HRX" + uuid.uuid4().hex)[:20]
    fields = [  # MSH-3 … MSH-18
        (header.receiving_application if header else "") or "HRX",
        (header.receiving_facility if header else "") or _escape(institution, seps),
        header.sending_application if header else "", header.sending_facility if header else "",
        datetime.now(BEIJING).strftime("%Y%m%d%H%M%S%z"), "", msg_type, control,
        (header.processing_id if header else "") or "P", version, "", "", "", "", "",
        header.charset if header else ""]
    segments = [("MSH" + f + seps[1:] + f + f.join(fields)).rstrip(f)]
    message = scrub(error.message if error else text)
    control_id = _escape(header.control_id, seps) if header else ""
    segments.append(f.join(["MSA", code, control_id, _escape(message, seps)]).rstrip(f))
    if error is not None:
        location = error.location or ""
        parts = location.split("^")
        erl = c.join(_escape(p, seps) for p in parts) if location else ""
        cwe = c.join([error.hl7_code, ERROR_TEXT.get(error.hl7_code, ""), "HL70357"])
        eld = ""
        if version in ("2.3", "2.3.1", "2.4") and location:
            sub = seps[4]
            eld = c.join([_escape(p, seps) for p in (parts + ["", "", ""])[:3]]
                         + [sub.join([error.hl7_code, ERROR_TEXT.get(error.hl7_code, ""), "HL70357"])])
        segments.append(f.join(["ERR", eld, erl, cwe, "E", "", "", "", _escape(message, seps)]))
    return ("\r".join(segments) + "\r").encode(codec, errors="replace")


# ------------------------------------------------------------------------------------------- ACK journal


@dataclass(frozen=True)
class StoredAck:
    digest: str
    code: str
    ack: bytes
    stored_at: float


class AckJournal:
    """Positive ACKs by (MSH-3, MSH-4, MSH-10): SQLite in WAL mode with synchronous=NORMAL, group-committed.

    Recorded after the publish and before the ACK is sent, so a sender that missed the ACK and resends gets
    the same ACK and nothing is published twice. Only positive ACKs are kept (a refusal must be retried).
    Rows older than ``retention_days`` are pruned when the journal opens; ACKs hold no patient data.

    Durability: the journal holds no result data, Kafka does (the ACK is only built once the broker
    acknowledged the publish); the journal only saves a resend from being processed again. So ``put`` does
    not wait for the disk: it hands the row to a writer thread, which commits whatever has queued up in one
    transaction (one commit per batch, not per message, and no SQLite work on the ACK path), and ``get``
    sees queued rows at once. The commit is not fsynced either (WAL, synchronous=NORMAL: the WAL is synced
    at checkpoints, and the database cannot be corrupted by a crash). What a crash can cost: the rows queued
    or committed in the last moments before it (a process crash: the few not yet committed; a power loss:
    also those since the last checkpoint). A resend of one of those messages is then processed and
    published again instead of getting its stored ACK, and the store's UNIQUE natural keys absorb the
    duplicate events. An fsync or a commit per message before the ACK would buy nothing but ACK latency.
    """

    _UPSERT = ("INSERT INTO hl7_acks VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sending_application, sending_facility,"
               " control_id) DO UPDATE SET digest = excluded.digest, ack_code = excluded.ack_code, ack = excluded.ack,"
               " stored_at = excluded.stored_at")

    def __init__(self, path: Path, retention_days: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()  # guards the queue and pending rows below (never held across SQLite calls)
        self._changed = threading.Condition(self._lock)
        db = self._connect()
        db.execute(
            "CREATE TABLE IF NOT EXISTS hl7_acks (sending_application TEXT NOT NULL, sending_facility TEXT NOT NULL,"
            " control_id TEXT NOT NULL, digest TEXT NOT NULL, ack_code TEXT NOT NULL, ack BLOB NOT NULL,"
            " stored_at REAL NOT NULL, PRIMARY KEY (sending_application, sending_facility, control_id))")
        db.execute("DELETE FROM hl7_acks WHERE stored_at < ?", (time.time() - retention_days * 86400,))
        # Idle reading connections, one per concurrent reader (WAL: readers never wait for the writer). A
        # shared connection behind a lock made the connection threads queue up: the holder, back from SQLite,
        # waits for the GIL while the others wait for it.
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers.put(db)
        self._queued: list[tuple[tuple[str, str, str], StoredAck]] = []  # put(), not yet taken by the writer
        self._pending: dict[tuple[str, str, str], StoredAck] = {}  # put() but not yet committed: get() sees them
        self._writing = 0  # rows taken by the writer and not yet committed
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, args=(self._connect(),), name="hl7-ack-journal",
                                        daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit: see the class docstring
        return db

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            db = self._readers.get_nowait()
        except queue.Empty:
            db = self._connect()
        try:
            yield db
        finally:
            self._readers.put(db)

    def get(self, key: tuple[str, str, str]) -> StoredAck | None:
        with self._lock:
            queued = self._pending.get(key)
        if queued is not None:
            return queued
        # A row leaves _pending only once committed, so a row missed above is found here.
        with self._reader() as db:
            row = db.execute(
                "SELECT digest, ack_code, ack, stored_at FROM hl7_acks WHERE sending_application = ? AND "
                "sending_facility = ? AND control_id = ?", key).fetchone()
        return StoredAck(row[0], row[1], bytes(row[2]), row[3]) if row else None

    def put(self, key: tuple[str, str, str], digest: str, code: str, ack: bytes) -> None:
        """Record a positive ACK; visible to ``get`` at once, committed by the writer thread shortly after."""
        stored = StoredAck(digest, code, ack, time.time())
        with self._lock:
            if self._closing:
                raise sqlite3.ProgrammingError("the ACK journal is closed")
            self._pending[key] = stored
            self._queued.append((key, stored))
            self._changed.notify_all()

    def _write_loop(self, db: sqlite3.Connection) -> None:
        """Commit queued rows, all that queued up meanwhile in one transaction, until closed and drained."""
        try:
            while True:
                with self._lock:
                    while not self._queued and not self._closing:
                        self._changed.wait()
                    if not self._queued:
                        return
                    batch, self._queued = self._queued, []
                    self._writing = len(batch)
                try:
                    with db:  # one transaction for the batch
                        db.execute("BEGIN")
                        db.executemany(self._UPSERT, [(*key, a.digest, a.code, a.ack, a.stored_at) for key, a in batch])
                except sqlite3.Error as exc:  # those resends would be republished, which the store absorbs
                    log.error("hl7: ACK journal write of %d row(s) failed: %s", len(batch), exc)
                with self._lock:
                    for key, stored in batch:
                        if self._pending.get(key) is stored:
                            del self._pending[key]  # committed (a later put for the same key stays pending)
                    self._writing = 0
                    self._changed.notify_all()
        finally:
            db.close()

    def flush(self) -> None:
        """Wait until everything ``put`` so far is committed."""
        with self._lock:
            while self._queued or self._writing:
                self._changed.wait()

    def count(self) -> int:
        self.flush()
        with self._reader() as db:
            return int(db.execute("SELECT count(*) FROM hl7_acks").fetchone()[0])

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the database (readers must have finished)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._changed.notify_all()
        self._writer.join()
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                return


class _KeyLocks:
    """Serialises concurrent deliveries of the same (MSH-3, MSH-4, MSH-10) inside this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str, str], list[Any]] = {}

    @contextmanager
    def hold(self, key: tuple[str, str, str]) -> Iterator[None]:
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


# ---------------------------------------------------------------------------------------------- receiver


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

    def __init__(self, institution: str, book: Any, pseudonymizer: Any, publisher: Any,
                 journal: AckJournal | None = None, *, processing_ids: Sequence[str] = ("P",),
                 facilities: Sequence[str] = (), max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.institution = institution
        self.book = book
        self.pseudonymizer = pseudonymizer
        self.publisher = publisher
        self.journal = journal
        self.processing_ids = tuple(p.upper() for p in processing_ids)
        self.facilities = tuple(facilities)
        self.max_bytes = max_bytes
        self._locks = _KeyLocks()
        ResultPipeline(book, pseudonymizer).check_institution(institution)

    # the MLLP frame handler
    def __call__(self, frame: mllp.Frame, peer: str = "-") -> bytes | None:
        if frame.oversize:
            outcome = self.oversize(frame.payload, frame.size)
        else:
            outcome = self.handle(frame.payload)
        self._log(peer, outcome)
        return outcome.ack

    def _log(self, peer: str, outcome: Outcome) -> None:
        level = logging.INFO if outcome.accepted or not outcome.code else logging.WARNING
        if not log.isEnabledFor(level):  # scrubbing costs regex passes per message; skip it when not logged
            return
        where = f" at {outcome.error.location}" if outcome.error and outcome.error.location else ""
        log.log(level, "hl7 %s: control=%s %s%s%s: %s", peer, scrub(outcome.control_id or "-"), outcome.code or "-",
                " (duplicate, stored ACK replayed)" if outcome.duplicate else "", where, scrub(outcome.text))

    def _refuse(self, header: Header | None, error: Hl7Error, codec: str) -> Outcome:
        code = ack_code(header, "reject" if error.reject else "error")
        ack = build_ack(header, code, error, codec, self.institution) if ack_wanted(header, False) else None
        return Outcome(code, scrub(error.message), ack, header.control_id if header else None, error=error)

    def oversize(self, head: bytes, size: int) -> Outcome:
        header, codec = None, "utf-8"
        try:
            header_text = _header_text(head)
            codec = charset_of(_msh18(header_text)) or ("utf-8" if header_text.isascii() else "gb18030")
            header = parse_header(header_text)[1]
        except Hl7Error:
            pass
        return self._refuse(header, Hl7Error(f"message of {size} bytes exceeds the limit of {self.max_bytes} bytes; "
                                             "split it into several messages", None, "207"), codec)

    def handle(self, payload: bytes) -> Outcome:
        if len(payload) > self.max_bytes:
            return self.oversize(payload[:mllp.HEAD_BYTES], len(payload))
        header: Header | None = None
        codec = "utf-8"
        try:
            text, codec = decode(payload)
            message, header = parse_header(text)
            if header.message_type == "ACK":
                return Outcome("", "an acknowledgement: not acknowledged", None, header.control_id)
            check_header(header, self.processing_ids, self.facilities)
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
        if self.journal is not None:
            stored = self.journal.get(header.key)
            if stored is not None and stored.digest == digest:
                return Outcome(stored.code, "duplicate: the stored acknowledgement is replayed",
                               stored.ack if ack_wanted(header, True) else None, header.control_id, duplicate=True)
            if stored is not None:
                log.warning("hl7: control ID %s from %s reused with different content: processed as a new message",
                            scrub(header.control_id), scrub(header.sending_facility))
        pipeline = ResultPipeline(self.book, self.pseudonymizer, self.publisher)
        try:
            reports = parse_reports(message, header, self.institution)
            built = [self._event(pipeline, r) for r in reports]
        except Hl7Error as error:
            return self._refuse(header, error, codec)
        except Exception as exc:  # noqa: BLE001
            log.error("hl7: building events failed: %s", scrub(repr(exc)))
            return self._refuse(header, Hl7Error("internal error building the result events", None, "207"), codec)
        try:
            pipeline.publish(built)
        except BrokerUnavailable as exc:
            log.warning("hl7: broker unavailable: %s", scrub(str(exc)))
            return self._refuse(header, Hl7Error("the exchange cannot commit results right now (message broker "
                                                 "unavailable); nothing was stored, resend later", None, "207"), codec)
        except Exception as exc:  # noqa: BLE001
            log.error("hl7: publishing failed: %s", scrub(repr(exc)))
            return self._refuse(header, Hl7Error("internal error while committing; nothing acknowledged, resend "
                                                 "later", None, "207"), codec)
        code = ack_code(header, "accept")
        text = f"{len(built)} result(s) committed"
        ack = build_ack(header, code, None, codec, self.institution, text)
        if self.journal is not None:
            try:
                self.journal.put(header.key, digest, code, ack)
            except sqlite3.Error as exc:  # a resend then republishes, which the store's natural key absorbs
                log.error("hl7: ACK journal write failed (a resend would be republished): %s", exc)
        return Outcome(code, text, ack if ack_wanted(header, True) else None, header.control_id,
                       published=len(built))

    @staticmethod
    def _event(pipeline: ResultPipeline, report: LabReport) -> dict[str, Any]:
        try:
            return pipeline.lab_event(report, "hl7v2")
        except Hl7Error:
            raise
        except AdapterError as exc:
            location = exc.location
            match = _SCHEMA_OBSERVATION.search(exc.message)
            if match and int(match.group(1)) < len(report.observations):
                location = report.observations[int(match.group(1))].location or location
            hl7_code = "103" if exc.code == "not-found" else "102"
            raise Hl7Error(exc.message, location, hl7_code) from None


# ------------------------------------------------------------------------------------------------ files


def split_batch(data: bytes) -> list[bytes]:
    """The messages of a file: each MSH starts one; FHS/BHS/BTS/FTS envelopes and MLLP framing bytes dropped.

    Segments before any MSH come back as one item of their own, so that it is refused (not silently lost).
    Works on bytes (CR, LF and the framing bytes never occur inside UTF-8 or GB18030 characters).
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    data = data.replace(mllp.VT, b"\r").replace(mllp.FS, b"\r")
    messages: list[list[bytes]] = []
    for line in re.split(rb"\r\n|\r|\n", data):
        if not line.strip():
            continue
        tag = line[:3]
        if tag in (b"FHS", b"BHS", b"BTS", b"FTS"):
            messages.append([])
        elif tag == b"MSH" or not messages:
            messages.append([line])
        else:
            messages[-1].append(line)
    return [b"\r".join(m) + b"\r" for m in messages if m]


# -------------------------------------------------------------------------------------------------- CLI


def _address(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    return host.strip("[]") or "0.0.0.0", int(port)


@click.command("hl7")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--listen", metavar="HOST:PORT", help="run the MLLP listener on this address")
@click.option("--institution", required=True, help="institution ID of the hospital this adapter serves (issuer)")
@click.option("--max-bytes", type=click.IntRange(1024), default=DEFAULT_MAX_BYTES, show_default=True,
              help="largest message accepted")
@click.option("--max-connections", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--publish-timeout", type=click.FloatRange(0.5, 60), default=4.0, show_default=True,
              help="seconds to wait for Kafka before refusing (keep it well below the sender's ACK timeout)")
@click.option("--facility", "facilities", multiple=True, help="accept only these MSH-4 values (repeatable)")
@click.option("--processing-id", "processing_ids", multiple=True, default=("P",), show_default=True,
              help="accepted MSH-11 processing IDs (repeatable)")
def hl7_command(files: tuple[Path, ...], listen: str | None, institution: str, max_bytes: int, max_connections: int,
                publish_timeout: float, facilities: tuple[str, ...], processing_ids: tuple[str, ...]) -> None:
    """HL7 v2 ORU^R01: an MLLP listener (--listen HOST:PORT) or FILES (batches). Exit 1 if any message was refused."""
    from exchange import runtime
    from exchange.config import Settings
    from adapters.publish import Publisher

    if bool(listen) == bool(files):
        raise click.UsageError("give either --listen HOST:PORT or FILE arguments")
    settings = Settings.from_env()
    publisher = Publisher(runtime.require_bootstrap(settings), timeout_s=publish_timeout, client_id="hrx-hl7")
    journal = AckJournal(settings.var_dir / "hl7-acks.db")
    try:
        receiver = Hl7Receiver(institution, runtime.codebook(settings), runtime.pseudonymizer(settings), publisher,
                               journal, processing_ids=processing_ids, facilities=facilities, max_bytes=max_bytes)
    except AdapterError as exc:
        raise click.BadParameter(str(exc), param_hint="--institution") from None
    try:
        if listen:
            _serve(receiver, _address(listen), max_bytes, max_connections)
            return
        refused = total = 0
        for path in files:
            for i, raw in enumerate(split_batch(path.read_bytes()), start=1):
                total += 1
                outcome = receiver.handle(raw)
                if not outcome.accepted:
                    refused += 1
                where = f" at {outcome.error.location}" if outcome.error and outcome.error.location else ""
                click.echo(f"{path}#{i} control={outcome.control_id or '-'}: {outcome.code or '-'}"
                           f"{' (duplicate)' if outcome.duplicate else ''}{where}: {outcome.text}",
                           err=not outcome.accepted)
        click.echo(f"{total - refused} message(s) accepted, {refused} refused")
        sys.exit(1 if refused else 0)
    finally:
        publisher.close()
        journal.close()


def _serve(receiver: Hl7Receiver, address: tuple[str, int], max_bytes: int, max_connections: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = mllp.MLLPServer(address, receiver, max_bytes=max_bytes, max_connections=max_connections).start()
    log.info("hl7: MLLP listener for %s on %s:%d (max %d bytes, %d connections)", receiver.institution,
             *server.address, max_bytes, max_connections)
    stop.wait()
    log.info("hl7: stopping")
    server.stop()


hl7 = hl7_command  # ``adapter.add_command(adapters.hl7v2.hl7)``

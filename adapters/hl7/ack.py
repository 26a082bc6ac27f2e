"""The ACK: which code (original or enhanced mode), whether one is sent at all, and its MSH/MSA/ERR.

Rules implemented (docs/rules.md, "Delivery"):

- A positive ACK (AA, or CA in enhanced mode) is sent only after Kafka acknowledged every event of the
  message. Content errors: AE + ERR; unsupported type, event, version or processing ID: AR; broker down or
  internal error: AE with ERR-3 207 (resend later); a control ID reused for other content, or a report
  number and version accepted before with other content: AE with ERR-3 205. A message larger than the
  limit is refused with AE (ERR-8 gives the size and the limit).
- ERR (v2.5 style): ERR-2 location ``SEG^seq^field[^repetition]``, ERR-3 HL7 table 0357 code, ERR-4
  severity E, ERR-8 user message; for v2.3/2.4 senders ERR-1 (ELD) is filled as well; MSA-3 repeats the
  text. Everything echoed passes :func:`schemas.resident_id.scrub` and is escaped in the sender's own
  separators; a sender that declared no escape character (a blank in MSH-2) gets ``\\`` in the ACK's.
- Enhanced mode (MSH-15 or MSH-16 valued): MSH-15 AL/ER/SU/NE picks when an *accept* ACK is sent. CA =
  committed, i.e. acknowledged by Kafka (so exactly when AA would be sent); CR = the message can never be
  accepted by this receiver as sent (type, event, version, processing ID); CE = everything else that is not
  committed (content errors, size, broker down: "cannot accept for any other reason"). Committing to Kafka
  is all this receiver does, so no separate application ACK follows; if only MSH-16 is valued the AA/AE/AR
  answer is sent at once on the same connection under MSH-16's condition.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime

from adapters.hl7.exceptions import Hl7Error
from adapters.hl7.header import SUPPORTED_VERSIONS, Header
from codes.calendar import BEIJING
from schemas.resident_id import scrub

#: HL7 table 0357 (message error condition codes) used here.
ERROR_TEXT = {
    "100": "Segment sequence error", "101": "Required field missing", "102": "Data type error",
    "103": "Table value not found", "200": "Unsupported message type", "201": "Unsupported event code",
    "202": "Unsupported processing id", "203": "Unsupported version id", "205": "Duplicate key identifier",
    "207": "Application internal error",
}

_LINE_BREAKS = re.compile(r"[\r\n]+")
_DEFAULT_SEPARATORS = "|^~\\&"
_ESCAPE_CHARACTERS = "\\#!$%"  # the ACK's escape character when the sender declared none, first unused


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


def _ack_separators(seps: str) -> str:
    """The ACK's separators: the sender's, with an escape character in place of a blank (none declared)."""
    if not seps[3].isspace():
        return seps
    escape = next(e for e in _ESCAPE_CHARACTERS if e not in seps)
    return seps[:3] + escape + seps[4:]


def _raw_echo(seps: str) -> Callable[[str], str]:
    """How a field echoed as sent (still escaped in the sender's separators) is written into the ACK: as it
    is, unless the ACK has an escape character the sender did not have, which must then be escaped itself."""
    if not seps[3].isspace():
        return lambda text: text
    escape = _ack_separators(seps)[3]
    return lambda text: text.replace(escape, f"{escape}E{escape}")


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
    """Whether an ACK is sent at all under the message's condition (HL7 table 0155): AL always, NE never,
    ER only for a refusal, SU only for a success."""
    condition = ack_plan(header)[1]
    return {"NE": False, "ER": not success, "SU": success}.get(condition, True)


def build_ack(header: Header | None, code: str, error: Hl7Error | None, codec: str, institution: str,
              text: str = "") -> bytes:
    """The ACK message (MSH, MSA, and ERR for a refusal) in the sender's separators and character set."""
    seps = header.separators if header else _DEFAULT_SEPARATORS
    raw = _raw_echo(seps)
    seps = _ack_separators(seps)
    f, c = seps[0], seps[1]
    version = header.version if header and header.version in SUPPORTED_VERSIONS else "2.5.1"
    event = header.event if header and header.event else "R01"
    msg_type = f"ACK{c}{_escape(event, seps)}" + ("" if version == "2.3" else f"{c}ACK")
    control = ("HRX" + uuid.uuid4().hex)[:20]
    fields = [  # MSH-3 … MSH-18
        raw(header.receiving_application if header else "") or "HRX",
        raw(header.receiving_facility if header else "") or _escape(institution, seps),
        raw(header.sending_application if header else ""), raw(header.sending_facility if header else ""),
        datetime.now(BEIJING).strftime("%Y%m%d%H%M%S%z"), "", msg_type, control,
        (header.processing_id if header else "") or "P", version, "", "", "", "", "",
        raw(header.charset if header else "")]
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


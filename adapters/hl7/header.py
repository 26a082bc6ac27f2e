"""MSH: what the ACK and the duplicate check need, and the header checks that decide AR or AE.

Rules implemented:

- Message type ``ORU^R01`` only (AR, ERR-3 200/201 otherwise; incoming ACKs are recognised here and never
  acknowledged); MSH-12 2.3, 2.3.1, 2.4, 2.5 or 2.5.1 (AR 203); MSH-11 processing ID ``P`` unless the
  listener is configured otherwise (AR 202).
- MSH-10 (message control ID) is required (101) and at most 199 characters (102); ``--facility`` pins
  MSH-4 (103 for any other sending facility).
- Line endings: CR, LF and CRLF all end a segment and empty lines are dropped (many LIS write files with
  LF, and a stray blank line is not a segment).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.hl7.exceptions import Hl7Error
from adapters.hl7.segments import ParsedMessage, split_segments

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")

_LINE_ENDS = re.compile(r"[\r\n]+")


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
        """The duplicate key: (MSH-3, MSH-4, MSH-10)."""
        return (self.sending_application, self.sending_facility, self.control_id)

    @property
    def facility_ids(self) -> set[str]:
        sub = self.separators[1]
        return {p for p in self.sending_facility.split(sub)[:2] if p}


def parse_header(text: str) -> tuple[ParsedMessage, Header]:
    """Cut the whole message into segments and read its MSH; raises Hl7Error when MSH-1/MSH-2 are missing."""
    text = _LINE_ENDS.sub("\r", text.lstrip("\ufeff \t\r\n")).rstrip()
    if not text.startswith("MSH"):
        raise Hl7Error("the message does not start with an MSH segment", "MSH", "100")
    if len(text) < 8 or text[3].isalnum() or text[3].isspace():
        raise Hl7Error("MSH-1/MSH-2 (field separator and encoding characters) are missing", "MSH^1^2", "101")
    message = ParsedMessage(text, split_segments(text))
    msh = message.msh
    header = Header(
        separators=msh.separators, sending_application=msh.raw(3), sending_facility=msh.raw(4),
        receiving_application=msh.raw(5), receiving_facility=msh.raw(6), control_id=msh.get(10),
        message_type=msh.get(9, comp=1).upper(), event=msh.get(9, comp=2).upper(),
        processing_id=msh.get(11).upper(), version=msh.get(12), accept_ack=msh.get(15).upper(),
        application_ack=msh.get(16).upper(), charset=msh.raw(18), sent_at=msh.get(7))
    return message, header


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

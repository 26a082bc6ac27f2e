"""HL7 v2 lab results: ORU^R01 (v2.3 – v2.5.1) over MLLP or from files → the shared result pipeline.

Library: python-hl7 (``import hl7``) reads time stamps, and its escape-sequence handling is used through
:mod:`.python_hl7_compat`. python-hl7 was chosen over hl7apy because it is maintained, dependency-free,
tolerant of the loosely profiled messages Chinese LIS send, and much faster (hl7apy builds a validated
object per element). The split of a message into segments, fields, repetitions, components and
subcomponents is done here (:mod:`.segments`), by python-hl7's rules but lazily. Bytes are only ever cut
into messages (MLLP blocks, MSH-started groups in batch files), never into fields. The adapter validates
what the exchange relies on itself, with errors that name the segment and field.

Modules, in the order a message meets them:

- :mod:`.mllp`: MLLP framing, the bounded threaded listener (optionally over TLS) and a client;
- :mod:`.door`: which addresses may connect, and under which MSH-4 each may send (the allow-list);
- :mod:`.batch`: the messages of a batch file (file mode);
- :mod:`.charset`: MSH-18 → the codec the message is decoded and answered with;
- :mod:`.segments`: the segment/field tokenizer;
- :mod:`.header`: MSH, and the checks that decide AR or AE;
- :mod:`.oru`: ORU^R01 → :class:`~adapters.pipeline.LabReport` (statuses, versions, values, units);
- :mod:`.ack`: the ACK (original and enhanced mode, ERR);
- :mod:`.journal`: positive ACKs by duplicate key, and the digests of the reports accepted;
- :mod:`.conflicts`: report keys and content digests (duplicate or conflict);
- :mod:`.receiver`: one message in, an outcome and its ACK out;
- :mod:`.python_hl7_compat`: every use of python-hl7's internals, version-checked.

Each module's docstring lists the rules it implements; docs/rules.md, "Delivery", "Statuses and versions",
"Dates", "Privacy" and "Network doors", gives the exchange-wide ones.
"""
from __future__ import annotations

from adapters.hl7.ack import ERROR_TEXT, ack_code, ack_plan, ack_wanted, build_ack
from adapters.hl7.batch import split_batch
from adapters.hl7.charset import charset_of, decode
from adapters.hl7.door import Hl7Door
from adapters.hl7.exceptions import Hl7Error
from adapters.hl7.header import SUPPORTED_VERSIONS, Header, check_header, parse_header
from adapters.hl7.journal import AckJournal, StoredAck, StoredReport
from adapters.hl7.mllp import DEFAULT_MAX_BYTES, Frame, FrameReader, MLLPClient, MLLPServer, Peer, frame
from adapters.hl7.oru import RESIDENT_ID_OID, RESIDENT_ID_TYPE, parse_message, parse_reports, report_version, ucum_unit
from adapters.hl7.receiver import Hl7Receiver, Outcome
from adapters.hl7.segments import ParsedMessage, Segment

__all__ = [
    "DEFAULT_MAX_BYTES", "ERROR_TEXT", "RESIDENT_ID_OID", "RESIDENT_ID_TYPE", "SUPPORTED_VERSIONS",
    "AckJournal", "Frame", "FrameReader", "Header", "Hl7Door", "Hl7Error", "Hl7Receiver", "MLLPClient",
    "MLLPServer", "Outcome", "ParsedMessage", "Peer", "Segment", "StoredAck", "StoredReport",
    "ack_code", "ack_plan", "ack_wanted", "build_ack", "charset_of", "check_header", "decode", "frame",
    "parse_header", "parse_message", "parse_reports", "report_version", "split_batch", "ucum_unit",
]

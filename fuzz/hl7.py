"""HL7 v2 harness: the bytes of a batch file or of one MLLP block → messages → ORU^R01 reports → events, and
the ACK that answers each message.

The steps are the receiver's (``adapters/hl7/receiver.py``) without the journal and the broker:
:func:`~adapters.hl7.split_batch` (file mode), :func:`~adapters.hl7.decode` by MSH-18,
:func:`~adapters.hl7.parse_header`, :func:`~adapters.hl7.check_header`, :func:`~adapters.hl7.parse_reports`,
the shared pipeline's ``lab_event`` and :func:`~adapters.hl7.build_ack`.

Contract: each step returns or raises :class:`~adapters.hl7.Hl7Error` (the pipeline steps:
:class:`~adapters.pipeline.AdapterError`, which the receiver turns into an Hl7Error); building the ACK for
either outcome never raises.
"""
from __future__ import annotations

from fuzz.harness import FUZZ_KEY, fuzz, instrumented

with instrumented("hl7"):
    from adapters.hl7 import (Hl7Error, Header, ack_code, build_ack, check_header, decode, parse_header,
                              parse_reports, split_batch)
    from adapters.report import AdapterError
    from adapters.pipeline import ResultPipeline
    from adapters.pseudonymize import Pseudonymizer
    from codes import load_codebook

PIPELINE = ResultPipeline(load_codebook(), Pseudonymizer(FUZZ_KEY))

#: A listener serves one hospital (``--institution``). The seed messages' sending facilities (MSH-4) are
#: received by their own hospital's listener, as in tests/adapters/hl7, so that their local codes map and a
#: mutated message gets as far as the envelope; any other facility goes to the first.
LISTENERS = {"BJCY001": "bj-chaoyang-001", "WH001": "hb-wuhan-001", "XH001": "sh-xuhui-001"}
DEFAULT_LISTENER = "bj-chaoyang-001"


def _listener(header: Header) -> str:
    return LISTENERS.get(header.sending_facility.split(header.separators[1])[0], DEFAULT_LISTENER)


def one_message(raw: bytes) -> None:
    """Receive one message as the listener does, and build its ACK."""
    header: Header | None = None
    codec, institution = "utf-8", DEFAULT_LISTENER
    try:
        text, codec = decode(raw)
        message, header = parse_header(text)
        if header.message_type == "ACK":
            return  # an acknowledgement is never acknowledged
        check_header(header)
        institution = _listener(header)
        events = [PIPELINE.lab_event(report, "hl7v2") for report in parse_reports(message, header, institution)]
    except Hl7Error as error:
        build_ack(header, ack_code(header, "reject" if error.reject else "error"), error, codec, institution)
        return
    except AdapterError as error:
        refusal = Hl7Error(error.message, error.location, "103" if error.code == "not-found" else "102")
        build_ack(header, ack_code(header, "error"), refusal, codec, institution)
        return
    build_ack(header, ack_code(header, "accept"), None, codec, institution, f"{len(events)} result(s) committed")


def one_input(data: bytes) -> None:
    for raw in split_batch(data):
        one_message(raw)


if __name__ == "__main__":
    fuzz(one_input)

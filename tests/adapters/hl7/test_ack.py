"""ACKs: the ERR segment for v2.5.1 and v2.3 senders, and enhanced mode (MSH-15/MSH-16)."""
from __future__ import annotations

import pytest

from adapters.hl7 import Hl7Error, build_ack, decode, parse_header
from tests.adapters.hl7.hl7data import CHAOYANG, WUHAN_GBK, fields, replace


def test_err_segment_v251_and_v23() -> None:
    _, header = parse_header(decode(CHAOYANG)[0])
    ack = build_ack(header, "AE", Hl7Error("bad | value ^ here", "OBX^3^5", "102"), "utf-8", "bj-chaoyang-001")
    f = fields(ack)
    assert (f["MSA-1"], f["MSA-2"], f["MSH-9"], f["MSH-18"]) == ("AE", "CY20240315000123", "ACK^R01^ACK",
                                                                  "UNICODE UTF-8")
    assert (f["ERR-1"], f["ERR-2"], f["ERR-3"], f["ERR-4"]) == ("", "OBX^3^5", "102^Data type error^HL70357", "E")
    assert f["ERR-8"] == f["MSA-3"] == "bad \\F\\ value \\S\\ here"  # escaped, not breaking the segment
    text, _ = decode(WUHAN_GBK)
    _, old = parse_header(text)
    ack = build_ack(old, "AE", Hl7Error("x", "PID^1^3^2", "101"), "gb18030", "hb-wuhan-001")
    f = fields(ack, "gb18030")
    assert f["ERR-1"] == "PID^1^3^101&Required field missing&HL70357" and f["MSH-9"] == "ACK^R01"


@pytest.mark.parametrize("msh15_16, outcome, code, sent", [
    ("AL|NE", "ok", "CA", True),
    ("AL|AL", "bad", "CE", True),
    ("AL|NE", "type", "CR", True),
    ("ER|NE", "ok", "CA", False),
    ("ER|NE", "bad", "CE", True),
    ("SU|NE", "bad", "CE", False),
    ("NE|AL", "ok", "AA", True),     # only an application ACK asked for: answered at once
    ("NE|NE", "ok", "CA", False),
])
def test_enhanced_mode(receiver, msh15_16, outcome, code, sent) -> None:  # type: ignore[no-untyped-def]
    raw = replace(CHAOYANG, "|2.5.1||||||UNICODE", f"|2.5.1|||{msh15_16}||UNICODE")
    if outcome == "bad":
        raw = replace(raw, "|56|U/L|", "|fifty|U/L|")
    elif outcome == "type":
        raw = replace(raw, "ORU^R01^ORU_R01", "ADT^A01^ADT_A01")
    result = receiver.handle(raw)
    assert result.code == code and (result.ack is not None) == sent
    if sent:
        assert fields(result.ack)["MSA-1"] == code

"""OBX values: every value type that carries a result is accepted and mapped to the event's value kinds; the
HL7 null is a null; numbers a double cannot hold exactly, empty final results and physically impossible
values are refused naming the segment and field; OBX-7 one-sided ranges."""
from __future__ import annotations

import base64

import pytest

from adapters.hl7 import Hl7Error, Hl7Receiver, parse_message
from schemas import events
from tests.fakes import FakePublisher
from tests.adapters.hl7.hl7data import CHAOYANG, fields, replace

HEAD = [b"MSH|^~\\&|LIS|BJCY001|HRX|HRX|20240315093012+0800||ORU^R01^ORU_R01|V-1|P|2.5.1||||||UNICODE UTF-8",
        b"PID|1||110105198003120024^^^^NNCHN",
        b"OBR|1||F-1|BIO^Bio^L|||20240315073000|||||||||||||||20240315092500|||F"]


def _message(*obx: str, obr25: str = "F") -> bytes:
    head = HEAD[:2] + [HEAD[2][:-1] + obr25.encode()]
    return b"\r".join(head + [line.encode() for line in obx])


def _obx(kind: str, value: str, status: str = "F", code: str = "X1^Test^L", unit: str = "", ref: str = "",
         flag: str = "") -> str:
    return f"OBX|1|{kind}|{code}||{value}|{unit}|{ref}|{flag}|||{status}"


def _event(pipeline, raw: bytes) -> dict:  # type: ignore[no-untyped-def]
    _, [report] = parse_message(raw, "bj-chaoyang-001")
    event = pipeline.lab_event(report, "hl7v2")
    events.validate("lab-result.v1", event)
    return event


def _one(pipeline, kind: str, value: str, **kw) -> dict:  # type: ignore[no-untyped-def]
    return _event(pipeline, _message(_obx(kind, value, **kw)))["observations"][0]


def _refused(raw: bytes) -> Hl7Error:
    with pytest.raises(Hl7Error) as info:
        parse_message(raw, "bj-chaoyang-001")
    return info.value


@pytest.mark.parametrize("value, kind, number, comparator, text", [
    (">^40", "quantity", 40.0, ">", None),
    ("^>^40", "quantity", 40.0, ">", None),  # the comparator shifted into SN.2 by some LIS
    ("<^5", "quantity", 5.0, "<", None),
    ("<=^0.5", "quantity", 0.5, "<=", None),
    ("^12.5", "quantity", 12.5, None, None),
    ("=^12.5", "quantity", 12.5, None, None),
    ("^3^:^4", "text", None, None, "3:4"),
    ("^1^/^40", "text", None, None, "1/40"),
    ("^10^-^20", "text", None, None, "10-20"),
    (">^1^:^40", "text", None, None, ">1:40"),
    ("^2^+", "text", None, None, "2+"),
    ("<>^7", "text", None, None, "<>7"),
])
def test_structured_numeric(pipeline, value, kind, number, comparator, text) -> None:  # type: ignore[no-untyped-def]
    obs = _one(pipeline, "SN", value)
    assert (obs["value_type"], obs["value"], obs["comparator"], obs["value_text"]) == (kind, number, comparator, text)


def test_text_coded_and_null_values(pipeline) -> None:  # type: ignore[no-untyped-def]
    assert _one(pipeline, "ST", "阴性")["value_text"] == "阴性"
    assert _one(pipeline, "TX", "第一行~第二行")["value_text"] == "第一行\n第二行"
    assert _one(pipeline, "FT", "报告\\.br\\结论")["value_text"] == "报告\n结论"
    organism = _one(pipeline, "CWE", "112283007^大肠埃希菌^SCT~3092008^金黄色葡萄球菌^SCT", code="BCUL^血培养^L")
    assert (organism["value_type"], organism["value_text"]) == ("coded", "大肠埃希菌; 金黄色葡萄球菌")
    assert _one(pipeline, "CE", "NEG")["value_text"] == "NEG"  # no text: the code
    for kind in ("ST", "NM", "CE", "SN", "TS"):  # the HL7 null is "no value", never the text ""
        obs = _one(pipeline, kind, '""', status="P")
        assert (obs["value_type"], obs["value_text"], obs["value"]) == ("none", None, None), kind
    nulls = _one(pipeline, "NM", "5", unit='""', ref='""', flag='""')
    assert (nulls["unit"], nulls["reference_range"], nulls["interpretation"]) == (None, None, None)


_DATES = [("2024", "2024"), ("202403", "2024-03"), ("20240315", "2024-03-15")]
_TIMES = [
    ("202403150930", "2024-03-15T09:30+08:00"),
    ("20240315093045", "2024-03-15T09:30:45+08:00"),
    ("20240315093045.25+0000", "2024-03-15T09:30:45.25+00:00"),
    ("202403150930-0500", "2024-03-15T09:30-05:00"),
    ("20240315093045^S", "2024-03-15T09:30:45+08:00"),  # TS.2, the degree of precision, is not needed
]


@pytest.mark.parametrize("kind, value, iso", [("DT", v, i) for v, i in _DATES]  # DT carries a date only
                         + [(k, v, i) for k in ("TS", "DTM") for v, i in _DATES + _TIMES])
def test_date_values(pipeline, kind: str, value: str, iso: str) -> None:  # type: ignore[no-untyped-def]
    obs = _one(pipeline, kind, value)
    assert (obs["value_type"], obs["value_text"], obs["value_date"]) == ("text", iso, iso)


def test_events_without_a_date_value_carry_no_value_date(pipeline) -> None:  # type: ignore[no-untyped-def]
    assert "value_date" not in _one(pipeline, "NM", "5.1")  # the optional field is only there when used


@pytest.mark.parametrize("value", ["20241315", "20240230", "2024-03-15", "202403150961", "2024031509301", "x"])
def test_bad_date_values_are_refused(value: str) -> None:
    error = _refused(_message(_obx("DT", value)))
    assert (error.hl7_code, error.location) == ("102", "OBX^1^5") and "date" in error.message


def test_encapsulated_data(pipeline) -> None:  # type: ignore[no-untyped-def]
    text = "镜检：未见异常。结论：正常"
    b64 = base64.b64encode(text.encode()).decode()
    assert _one(pipeline, "ED", f"LIS^TEXT^plain^A^{text}")["value_text"] == text
    assert _one(pipeline, "ED", f"^TEXT^^Base64^{b64}")["value_text"] == text
    gbk = base64.b64encode(text.encode("gbk")).decode()
    assert _one(pipeline, "ED", f"^TX^plain^Base64^{gbk}")["value_text"] == text
    assert _one(pipeline, "ED", f"^TEXT^plain^Hex^{text.encode().hex()}")["value_text"] == text
    pdf = base64.b64encode(b"%PDF-1.4 " + bytes(range(256)) * 4).decode()
    kept = _one(pipeline, "ED", f"LIS^AP^PDF^Base64^{pdf}")
    assert kept["value_type"] == "text"
    assert kept["value_text"] == ("encapsulated AP/PDF document of 1033 bytes, not kept by the exchange: ask "
                                  "the issuer for it")
    only = _event(pipeline, _message(_obx("ED", f"^AP^PDF^Base64^{pdf}")))  # a report that is only a document
    assert len(only["observations"]) == 1
    error = _refused(_message(_obx("ED", "^AP^PDF^Base64^not*base64")))
    assert (error.hl7_code, error.location) == ("102", "OBX^1^5")
    error = _refused(_message(_obx("ED", "^AP^PDF^UU^abc")))
    assert (error.hl7_code, error.location) == ("103", "OBX^1^5")


@pytest.mark.parametrize("obx11, obr25, value", [
    ("F", "F", ""), ("C", "C", ""), ("F", "F", '""'), ("", "F", ""), ("", "C", '""'), ("F", "P", ""),
])
def test_an_empty_final_result_is_refused(obx11: str, obr25: str, value: str) -> None:
    for kind in ("NM", "ST", "CE", "SN", "ED", "DT"):
        error = _refused(_message(_obx(kind, value, status=obx11), obr25=obr25))
        assert (error.hl7_code, error.location) == ("101", "OBX^1^5"), kind
        assert "empty on a final result" in error.message


@pytest.mark.parametrize("obx11, obr25", [("P", "P"), ("X", "F"), ("U", "F"), ("", "P"), ("F", "X")])
def test_no_value_is_accepted_when_not_final(obx11: str, obr25: str) -> None:
    _, [report] = parse_message(_message(_obx("NM", "", status=obx11), obr25=obr25), "bj-chaoyang-001")
    assert report.observations[0].value.kind == "none"


@pytest.mark.parametrize("value", [
    "9" * 400,                      # overflows to infinity
    "0." + "0" * 400 + "1",         # underflows to 0
    "1" + "0" * 400,
    "3.14159265358979323",          # 18 significant digits
    "1234567890123456",             # 16
    "4.9" + "0" * 10 + "e-324",     # not a plain decimal at all
    "1e999",
])
@pytest.mark.parametrize("kind, template", [("NM", "{}"), ("NM", "<{}"), ("SN", ">^{}"), ("SN", "^1^:^{}")])
def test_numbers_a_double_cannot_hold_exactly_are_refused(kind: str, template: str, value: str) -> None:
    error = _refused(_message(_obx(kind, template.format(value))))
    assert (error.hl7_code, error.location) == ("102", "OBX^1^5")
    assert len(error.message) < 200  # a 400-digit number is not echoed whole


@pytest.mark.parametrize("value, number", [
    ("123456789012345", 123456789012345.0), ("0.000000000000001", 1e-15), ("6.80", 6.8),
    ("1" + "0" * 300, 1e300), ("-0.5", -0.5), ("123456789012345000", 1.23456789012345e17),
])
def test_numbers_of_at_most_15_significant_digits_are_kept(value: str, number: float) -> None:
    _, [report] = parse_message(_message(_obx("NM", value)), "bj-chaoyang-001")
    assert report.observations[0].value.number == number


@pytest.mark.parametrize("ref, low, high, text", [
    (">40", 40.0, None, ">40"),
    ("<5", None, 5.0, "<5"),
    ("≥1", 1.0, None, "≥1"),
    ("≤0.5", None, 0.5, "≤0.5"),
    ("＜10", None, 10.0, "＜10"),
    ("3.9-6.1", 3.9, 6.1, None),
    ("3.9～6.1", 3.9, 6.1, None),
    ("阴性", None, None, "阴性"),
    ("<" + "9" * 400, None, None, "<" + "9" * 255),  # not a number a double holds: kept as text only
])
def test_reference_ranges(pipeline, ref: str, low, high, text) -> None:  # type: ignore[no-untyped-def]
    obs = _one(pipeline, "NM", "5", ref=ref)
    assert obs["reference_range"] == {"low": low, "high": high, "text": text}


# -- impossible values, checked by the code book's bounds in the item's unit -------------------------------

def _receiver(book, pseudonymizer, institution: str = "bj-chaoyang-001") -> Hl7Receiver:  # type: ignore[no-untyped-def]
    return Hl7Receiver(institution, book, pseudonymizer, FakePublisher())


@pytest.mark.parametrize("old, new, where, words", [
    ("|6.8|mmol/L|", "|-6.8|mmol/L|", "OBX^3^5", "L0032"),           # a negative glucose concentration
    ("|NM|K^钾^L||4.2|", "|SN|K^钾^L||<^0|", "OBX^4^5", "<0 mmol/L"),  # "below 0"
    ("|NM|K^钾^L||4.2|mmol/L|", "|NM|HBA1C^糖化血红蛋白^L||104|%|", "OBX^4^5", "largest possible value is 100"),
])
def test_impossible_values_are_refused(book, pseudonymizer, old, new, where, words) -> None:  # type: ignore[no-untyped-def]
    receiver = _receiver(book, pseudonymizer)
    outcome = receiver.handle(replace(CHAOYANG, old, new))
    ack = fields(outcome.ack)
    assert (ack["MSA-1"], ack["ERR-2"], ack["ERR-3"][:4]) == ("AE", where, "102^")
    assert words in ack["ERR-8"] and "impossible" in ack["ERR-8"]
    assert receiver.publisher.records == []
    assert receiver.handle(replace(CHAOYANG, "|NM|K^钾^L||4.2|mmol/L|", "|NM|HBA1C^糖化血红蛋白^L||6.1|%|")).code == "AA"


def test_bounds_apply_after_unit_conversion(book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    """bj-xicheng-001 reports glucose in mg/dL; its mapping converts to mmol/L before the check."""
    receiver = _receiver(book, pseudonymizer, "bj-xicheng-001")
    glucose = "GLU^葡萄糖^L^14749-6^Glucose [Moles/volume] in Serum or Plasma^LN||6.8|mmol/L|"
    assert receiver.handle(replace(CHAOYANG, glucose, "BJXCGLU^葡萄糖^L||122|mg/dL|")).code == "AA"
    outcome = receiver.handle(replace(CHAOYANG, glucose, "BJXCGLU^葡萄糖^L||-18|mg/dL|"))
    ack = fields(outcome.ack)
    assert (ack["MSA-1"], ack["ERR-2"]) == ("AE", "OBX^3^5") and "mmol/L is impossible" in ack["ERR-8"]

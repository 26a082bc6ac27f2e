"""ORU^R01 → LabReport: the sample messages, statuses and versions, values and units, and refusals that name
the segment and field."""
from __future__ import annotations

import json

import pytest

from adapters.hl7 import Hl7Error, decode, parse_message, report_version, ucum_unit
from schemas import events
from tests.adapters.hl7.hl7data import CHAOYANG, CHAOYANG_ID, CORRECTION, WUHAN_GBK, XUHUI, broken


def test_chaoyang_utf8_v251_becomes_one_mapped_event(pipeline, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    header, [report] = parse_message(CHAOYANG, "bj-chaoyang-001")
    assert (header.control_id, header.version, header.sending_facility) == ("CY20240315000123", "2.5.1", "BJCY001")
    assert (report.result_id, report.version, report.status) == ("CY2403150088", 2, "final")
    assert report.patient.location == "PID^1^3^2" and report.patient.sex == "female"
    assert (report.specimen_type, report.specimen_id) == ("SER", "CY2403150088")
    assert report.reported_at.isoformat() == "2024-03-15T09:25:00+08:00"
    assert [o.codes[0].code for o in report.observations] == ["ALT", "AST", "GLU", "K", "NA", "CREA"]  # SPM OBX skipped
    event = pipeline.lab_event(report, "hl7v2")
    events.validate("lab-result.v1", event)
    obs = {o["item"]["local_code"]: o for o in event["observations"]}
    assert obs["ALT"]["item"]["unified_code"] == "L0001" and obs["ALT"]["interpretation"] == "H"
    assert obs["GLU"]["item"]["unified_code"] == "L0032" and obs["GLU"]["value"] == 6.8
    assert obs["GLU"]["reference_range"] == {"low": 3.9, "high": 6.1, "text": None}
    assert obs["CREA"]["unit"] == "umol/L" and obs["CREA"]["item"]["unified_code"] == "L0026"  # μmol/L normalised
    assert event["patient"]["pseudonym"] == pseudonymizer.pseudonym(CHAOYANG_ID)
    assert event["source"] == {"adapter": "hl7v2", "message_id": "CY20240315000123",
                               "received_at": event["source"]["received_at"]}
    assert CHAOYANG_ID not in json.dumps(event, ensure_ascii=False)


def test_gbk_v23_message_with_chinese_text_and_two_reports(pipeline) -> None:  # type: ignore[no-untyped-def]
    assert b"\xc0\xee" in WUHAN_GBK  # 李 in GBK: the file really is GBK, not UTF-8
    text, codec = decode(WUHAN_GBK)
    assert codec == "gb18030" and "血常规" in text
    header, reports = parse_message(WUHAN_GBK, "hb-wuhan-001")
    assert header.version == "2.3" and [r.result_id for r in reports] == ["WH-F-5521", "WH-F-5522"]
    cbc, lft = (pipeline.lab_event(r, "hl7v2") for r in reports)
    wbc, hgb, plt = cbc["observations"]
    assert wbc["item"] == {**wbc["item"], "unified_code": "L0165", "local_name": "白细胞计数"}
    assert wbc["unit"] == "10*9/L" and wbc["interpretation"] == "H"  # 10\S\9/L and ↑
    assert plt["unit"] == "10*9/L" and plt["reference_range"]["low"] == 125  # unescaped "10^9/L", "125~350"
    assert cbc["specimen"]["type"] == "BLD" and cbc["collected_at"] == "2024-03-16T08:00:00+08:00"  # no offset: +08
    assert lft["observations"][1]["value_text"] == "标本已复查，结果可靠"
    assert lft["observations"][1]["item"]["unified_code"] is None  # unmapped kept, not dropped


def test_sn_and_coded_values(pipeline) -> None:  # type: ignore[no-untyped-def]
    _, [report] = parse_message(XUHUI, "sh-xuhui-001")
    event = pipeline.lab_event(report, "hl7v2")
    hbsag, afp, crp, aso, glu, rh = event["observations"]
    assert (hbsag["value_type"], hbsag["value_text"], hbsag["item"]["unified_code"]) == ("coded", "阴性", "L0144")
    assert hbsag["reference_range"]["text"] == "阴性"
    assert (afp["value_type"], afp["comparator"], afp["value"], afp["unit"]) == ("quantity", "<", 2.0, "ng/mL")
    assert (crp["comparator"], crp["value"], crp["interpretation"]) == (">", 200.0, "HH")
    assert (aso["value_type"], aso["value_text"]) == ("text", "1:160")
    assert (glu["value_type"], glu["value"], glu["comparator"]) == ("quantity", 5.1, None)
    assert rh["value_text"] == "阳性"


def test_a_correction_is_a_new_version() -> None:
    _, [final] = parse_message(CHAOYANG, "bj-chaoyang-001")
    _, [corrected] = parse_message(CORRECTION, "bj-chaoyang-001")
    assert final.result_id == corrected.result_id
    assert (final.version, corrected.status) == (2, "corrected")
    assert corrected.version == report_version("corrected", corrected.reported_at) > final.version
    assert corrected.observations[2].value.number == 7.2


def _with_statuses(obr25: str, obx11: list[str]) -> bytes:
    lines = [b"MSH|^~\\&|LIS|BJCY001|HRX|HRX|20240315093012+0800||ORU^R01^ORU_R01|S-1|P|2.5.1",
             b"PID|1||110105198003120024^^^^NNCHN",
             b"OBR|1||F-1|BIO^Bio^L|||20240315073000|||||||||||||||20240315092500|||" + obr25.encode()]
    for i, status in enumerate(obx11, start=1):
        lines.append(f"OBX|{i}|NM|ALT^ALT^L||{10 + i}|U/L|7-40||||{status}".encode())
    return b"\r".join(lines)


@pytest.mark.parametrize("obr25, obx11, status, version", [
    ("F", ["F", "F"], "final", 2),
    ("P", ["P"], "preliminary", 1),
    ("", ["P", "F"], "final", 2),          # no report status: the highest
    ("P", ["F", "P"], "preliminary", 1),   # OBR-25 authoritative when OBX-11 differ
    ("C", ["F", "F"], "corrected", None),  # a correction of report-level data (version from OBR-22)
    ("F", ["C", "C"], "corrected", None),  # OBR-25 not updated by the sender: unanimous OBX-11 raises it
    ("F", ["P", "P"], "final", 2),         # ... but never lowers it
    ("X", ["X"], "cancelled", None),
    ("", ["X", "X"], "cancelled", None),
    ("F", ["F", "X"], "final", 2),         # one cancelled test does not cancel the report
    ("", ["W"], "entered-in-error", None),
    ("A", ["F", ""], "preliminary", 1),
])
def test_version_from_result_status(obr25, obx11, status, version) -> None:  # type: ignore[no-untyped-def]
    _, [report] = parse_message(_with_statuses(obr25, obx11), "bj-chaoyang-001")
    expected = version if version is not None else report_version(status, report.reported_at)
    assert (report.status, report.version) == (status, expected)
    assert version is not None or report.version > 2
    if obx11[-1] == "X" and status != "cancelled":
        assert report.observations[-1].value.kind == "none"


OBR1 = "OBR|1|CY-O-778899|CY2403150088|BIO-8^生化八项^L|||20240315073000"
OBX1 = "OBX|1|NM|ALT^谷丙转氨酶^L||56|U/L|7-40|H|||F|||20240315091000\r"


@pytest.mark.parametrize("raw, code, where, words", [
    (broken("~110105198003120024^^^&2.16.156.10011.1.3&ISO^NNCHN", ""), "101", "PID^1^3", "no resident ID"),
    (broken("110105198003120024", "110105198003120021"), "102", "PID^1^3^2", "check character"),
    (broken("^^^&2.16.156.10011.1.3&ISO^NNCHN", "^^^BJCY001^SS"), "101", "PID^1^3", "NNCHN"),
    (broken(OBX1, "").replace(b"ORC|", OBX1.encode() + b"ORC|"), "100", "OBX^1", "OBX before any OBR"),
    (broken("PID|1|", "PIX|1|").replace(b"ORC|", b"PID|1||110105198003120024^^^^NNCHN\rORC|", 1)
     .replace(b"PV1|", b"ORC|RE\r" + OBR1.encode() + b"\rPV1|", 1), "100", "OBR^1", "before any PID"),
    (broken("|NM|AST^谷草转氨酶^L||31|", "|NM|AST^谷草转氨酶^L||3l|"), "102", "OBX^2^5", "not a number"),
    (broken("|NM|AST^", "|ZZ|AST^"), "103", "OBX^2^2", "value type"),
    (broken("CY-O-778899|CY2403150088|BIO-8", "||BIO-8"), "101", "OBR^1^3", "order number"),
    (broken("|||20240315073000|||", "|||2024-03-15 07:30|||"), "102", "OBR^1^7", "time stamp"),
    (broken("|U/L|13-35|N|||F", "|U/L|13-35|N|||D"), "103", "OBX^2^11", "result status"),
    (broken("|BIO-8^生化八项^L|", "||"), "101", "OBR^1^4", "universal service"),
    (broken("NTE|1||空腹采血", OBR1.replace("OBR|1", "OBR|2") + "\r" + OBX1.strip()), "205", "OBR^2^3", "same order"),
    (broken("CY20240315000123|", "|"), "101", "MSH^1^10", "control ID"),
    (broken("UNICODE UTF-8", "EBCDIC"), "103", "MSH^1^18", "character set"),
    (broken("UNICODE UTF-8", "UNICODE UTF-8").replace("王".encode(), "王".encode("gbk")), "102", "MSH^1^18",
     "not valid"),
    (broken("PV1|1|O", "MSH|^~\\&|X|Y"), "100", "MSH^2", "second MSH"),
    (b"PID|1||110105198003120024^^^^NNCHN\rOBR|1", "100", "MSH", "MSH segment"),
    (b"\x00\x01garbage", "100", "MSH", "MSH segment"),
])
def test_invalid_content_is_refused_naming_segment_and_field(raw: bytes, code: str, where: str, words: str) -> None:
    with pytest.raises(Hl7Error) as info:
        parse_message(raw, "bj-chaoyang-001")
    error = info.value
    assert (error.hl7_code, error.location, error.reject) == (code, where, False)
    assert words in error.message
    assert "110105198003120021" not in error.message and CHAOYANG_ID not in error.message


def test_unit_spellings() -> None:
    assert [ucum_unit(u) for u in ("10^9/L", "×10^12/L", "μmol/L", "mIU/mL", "IU/L", "U/L", " ")] == [
        "10*9/L", "10*12/L", "umol/L", "m[IU]/mL", "[IU]/L", "U/L", None]


def test_a_second_correction_later_is_a_newer_version() -> None:
    first = _with_statuses("C", ["C"])
    second = first.replace(b"20240315092500", b"20240316101500")  # OBR-22: corrected again the next day
    _, [one] = parse_message(first, "bj-chaoyang-001")
    _, [two] = parse_message(second, "bj-chaoyang-001")
    assert two.version > one.version > 2
    cancelled = first.replace(b"|||C", b"|||X").replace(b"||||C", b"||||X")
    _, [void] = parse_message(cancelled, "bj-chaoyang-001")
    assert void.status == "cancelled" and void.version == one.version + 1

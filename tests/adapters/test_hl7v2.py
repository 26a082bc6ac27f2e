"""The HL7 v2 adapter: ORU^R01 parsing, ACK/ERR, MLLP framing, duplicates, and delivery through a real broker.

Pure parsing and ACK tests need no broker. The MLLP tests use a real socket client against the server running
in a thread; the end-to-end ones add the real tansu broker and the engine writing to SQLite and PostgreSQL.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import hl7 as hl7lib
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from adapters import mllp
from adapters.hl7v2 import (AckJournal, report_version, Hl7Error, Hl7Receiver, build_ack, charset_of, decode, parse_header,
                            parse_message, split_batch, ucum_unit)
from adapters.pipeline import ResultPipeline
from schemas import events
from adapters.publish import BrokerUnavailable
from exchange.broker import EmbeddedBroker, ensure_topics
from schemas.topics import DEFAULT_PARTITIONS
from adapters.publish import Publisher
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.waiting import wait_for

DATA = Path(__file__).parent.parent / "data" / "hl7"
CHAOYANG = (DATA / "bj-chaoyang-001-v251-utf8.hl7").read_bytes()
CORRECTION = (DATA / "bj-chaoyang-001-correction.hl7").read_bytes()
WUHAN_GBK = (DATA / "hb-wuhan-001-v23-gbk.hl7").read_bytes()
XUHUI = (DATA / "sh-xuhui-001-sn-ce.hl7").read_bytes()
BATCH = DATA / "bj-chaoyang-001-batch.hl7"
CHAOYANG_ID = "110105198003120024"
WUHAN_ID = "420102197506151235"


def replace(raw: bytes, old: str, new: str, codec: str = "utf-8") -> bytes:
    assert old.encode(codec) in raw, old
    return raw.replace(old.encode(codec), new.encode(codec))


def renumber(raw: bytes, n: int, codec: str = "utf-8") -> bytes:
    """A distinct message (control ID) about a distinct result (filler order number)."""
    out = replace(raw, "CY20240315000123", f"CY-T-{n:06d}", codec)
    return out.replace(b"CY2403150088", f"CY-R-{n:06d}".encode())


def fields(ack: bytes, codec: str = "utf-8") -> dict[str, str]:
    """MSA and ERR fields of an ACK, parsed with python-hl7."""
    msg = hl7lib.parse(ack.decode(codec))
    msa = msg.segment("MSA")
    out = {"MSA-1": str(msa[1]), "MSA-2": str(msa[2]), "MSA-3": str(msa[3]) if len(msa) > 3 else "",
           "MSH-9": str(msg.segment("MSH")[9]), "MSH-18": str(msg.segment("MSH")[18]) if len(msg.segment("MSH")) > 18
           else ""}
    try:
        err = msg.segment("ERR")
    except KeyError:
        return out
    for n in (1, 2, 3, 4, 8):
        out[f"ERR-{n}"] = str(err[n]) if len(err) > n else ""
    return out


class RecordingPublisher:
    """Stands in for Kafka where only the adapter is under test; ``down`` makes it refuse like a dead broker."""

    def __init__(self) -> None:
        self.records: list[object] = []
        self.down = False

    def publish(self, records) -> None:  # type: ignore[no-untyped-def]
        batch = list(records)
        if self.down:
            raise BrokerUnavailable("test: broker down")
        self.records.extend(batch)


class CountingPublisher(Publisher):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.published = 0

    def publish(self, records) -> None:  # type: ignore[no-untyped-def]
        batch = list(records)
        super().publish(batch)
        self.published += len(batch)


@pytest.fixture
def pipeline(book, pseudonymizer) -> ResultPipeline:  # type: ignore[no-untyped-def]
    return ResultPipeline(book, pseudonymizer)


# ------------------------------------------------------------------------------------------------ parsing


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


def _broken(old: str, new: str, raw: bytes = CHAOYANG) -> bytes:
    return replace(raw, old, new)


OBR1 = "OBR|1|CY-O-778899|CY2403150088|BIO-8^生化八项^L|||20240315073000"
OBX1 = "OBX|1|NM|ALT^谷丙转氨酶^L||56|U/L|7-40|H|||F|||20240315091000\r"


@pytest.mark.parametrize("raw, code, where, words", [
    (_broken("~110105198003120024^^^&2.16.156.10011.1.3&ISO^NNCHN", ""), "101", "PID^1^3", "no resident ID"),
    (_broken("110105198003120024", "110105198003120021"), "102", "PID^1^3^2", "check character"),
    (_broken("^^^&2.16.156.10011.1.3&ISO^NNCHN", "^^^BJCY001^SS"), "101", "PID^1^3", "NNCHN"),
    (_broken(OBX1, "").replace(b"ORC|", OBX1.encode() + b"ORC|"), "100", "OBX^1", "OBX before any OBR"),
    (_broken("PID|1|", "PIX|1|").replace(b"ORC|", b"PID|1||110105198003120024^^^^NNCHN\rORC|", 1)
     .replace(b"PV1|", b"ORC|RE\r" + OBR1.encode() + b"\rPV1|", 1), "100", "OBR^1", "before any PID"),
    (_broken("|NM|AST^谷草转氨酶^L||31|", "|NM|AST^谷草转氨酶^L||3l|"), "102", "OBX^2^5", "not a number"),
    (_broken("|NM|AST^", "|ZZ|AST^"), "103", "OBX^2^2", "value type"),
    (_broken("CY-O-778899|CY2403150088|BIO-8", "||BIO-8"), "101", "OBR^1^3", "order number"),
    (_broken("|||20240315073000|||", "|||2024-03-15 07:30|||"), "102", "OBR^1^7", "time stamp"),
    (_broken("|U/L|13-35|N|||F", "|U/L|13-35|N|||D"), "103", "OBX^2^11", "result status"),
    (_broken("|BIO-8^生化八项^L|", "||"), "101", "OBR^1^4", "universal service"),
    (_broken("NTE|1||空腹采血", OBR1.replace("OBR|1", "OBR|2") + "\r" + OBX1.strip()), "205", "OBR^2^3", "same order"),
    (_broken("CY20240315000123|", "|"), "101", "MSH^1^10", "control ID"),
    (_broken("UNICODE UTF-8", "EBCDIC"), "103", "MSH^1^18", "character set"),
    (_broken("UNICODE UTF-8", "UNICODE UTF-8").replace("王".encode(), "王".encode("gbk")), "102", "MSH^1^18",
     "not valid"),
    (_broken("PV1|1|O", "MSH|^~\\&|X|Y"), "100", "MSH^2", "second MSH"),
    (b"PID|1||110105198003120024^^^^NNCHN\rOBR|1", "100", "MSH", "MSH segment"),
    (b"\x00\x01garbage", "100", "MSH", "MSH segment"),
])
def test_invalid_content_is_refused_naming_segment_and_field(raw, code, where, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Hl7Error) as info:
        parse_message(raw, "bj-chaoyang-001")
    error = info.value
    assert (error.hl7_code, error.location, error.reject) == (code, where, False)
    assert words in error.message
    assert "110105198003120021" not in error.message and CHAOYANG_ID not in error.message


@pytest.mark.parametrize("old, new, code, where", [
    ("ORU^R01^ORU_R01", "ADT^A01^ADT_A01", "200", "MSH^1^9"),
    ("ORU^R01^ORU_R01", "ORU^R30^ORU_R30", "201", "MSH^1^9"),
    ("|P|2.5.1|", "|P|2.6|", "203", "MSH^1^12"),
    ("|P|2.5.1|", "|T|2.5.1|", "202", "MSH^1^11"),
])
def test_unsupported_messages_are_rejected(old, new, code, where) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Hl7Error) as info:
        parse_message(_broken(old, new), "bj-chaoyang-001")
    assert (info.value.hl7_code, info.value.location, info.value.reject) == (code, where, True)


@pytest.mark.parametrize("declared, codec", [
    ("UNICODE UTF-8", "utf-8"), ("UTF-8", "utf-8"), ("GB 18030-2000", "gb18030"), ("GB18030", "gb18030"),
    ("GBK", "gb18030"), ("GB2312", "gb18030"), ("CHINESE", "gb18030"), ("8859/1", "latin-1"), ("", None),
    ("ASCII", None),
])
def test_declared_character_sets(declared, codec) -> None:  # type: ignore[no-untyped-def]
    assert charset_of(declared) == codec


def test_undeclared_gbk_and_gb18030_messages_decode() -> None:
    undeclared = replace(WUHAN_GBK, "|CHN|GBK", "|CHN|", "gbk")
    assert decode(undeclared)[1] == "gb18030" and "李^建国" in decode(undeclared)[0]
    declared = replace(WUHAN_GBK, "|CHN|GBK", "|CHN|GB 18030-2000", "gbk")
    assert "白细胞计数" in decode(declared)[0]
    assert decode(XUHUI)[1] == "utf-8"  # undeclared, valid UTF-8
    mislabelled = replace(CHAOYANG, "UNICODE UTF-8", "GBK")  # UTF-8 bytes, declared GBK
    assert decode(mislabelled) == (decode(CHAOYANG)[0].replace("UNICODE UTF-8", "GBK"), "gb18030")


def test_unit_spellings() -> None:
    assert [ucum_unit(u) for u in ("10^9/L", "×10^12/L", "μmol/L", "mIU/mL", "IU/L", "U/L", " ")] == [
        "10*9/L", "10*12/L", "umol/L", "m[IU]/mL", "[IU]/L", "U/L", None]


# --------------------------------------------------------------------------------------------------- ACKs


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


@pytest.fixture
def receiver(book, pseudonymizer, tmp_path) -> Iterator[Hl7Receiver]:  # type: ignore[no-untyped-def]
    journal = AckJournal(tmp_path / "hl7-acks.db")
    yield Hl7Receiver("bj-chaoyang-001", book, pseudonymizer, RecordingPublisher(), journal, max_bytes=64 * 1024)
    journal.close()


def test_receiver_original_mode_and_duplicates(receiver) -> None:  # type: ignore[no-untyped-def]
    first = receiver.handle(CHAOYANG)
    assert first.code == "AA" and first.published == 1 and len(receiver.publisher.records) == 1
    again = receiver.handle(replace(CHAOYANG, "20240315093012+0800", "20240315093512+0800"))  # resent: new MSH-7
    assert again.duplicate and again.ack == first.ack and len(receiver.publisher.records) == 1
    reused = receiver.handle(replace(CHAOYANG, "|56|U/L|", "|57|U/L|"))  # same control ID, other content
    assert reused.code == "AA" and not reused.duplicate and len(receiver.publisher.records) == 2
    receiver.publisher.down = True
    down = receiver.handle(renumber(CHAOYANG, 1))
    assert down.code == "AE" and fields(down.ack)["ERR-3"].startswith("207^")
    assert receiver.journal.count() == 1  # refusals are never journaled, so the resend is processed
    receiver.publisher.down = False
    assert receiver.handle(renumber(CHAOYANG, 1)).code == "AA"


def test_ack_journal_skips_the_fsync_but_survives_a_restart(receiver) -> None:  # type: ignore[no-untyped-def]
    """WAL + synchronous=NORMAL, written by a group-committing thread: no fsync and no SQLite write before the
    ACK (the results are durable in Kafka, not here). A queued ACK is replayed at once, and a committed one
    by a new process (close() commits the queue)."""
    journal = receiver.journal
    with journal._reader() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL (FULL is 2)
    first = receiver.handle(CHAOYANG)
    assert receiver.handle(CHAOYANG).ack == first.ack  # whether or not the writer has committed it yet
    journal.close()
    reopened = AckJournal(journal.path)
    try:
        assert reopened.count() == 1
        again = Hl7Receiver("bj-chaoyang-001", receiver.book, receiver.pseudonymizer, receiver.publisher,
                            reopened).handle(CHAOYANG)
        assert again.duplicate and again.ack == first.ack and len(receiver.publisher.records) == 1
    finally:
        reopened.close()


def test_ack_journal_group_commit_keeps_the_latest_ack_per_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    journal = AckJournal(tmp_path / "acks.db")
    rows = [(("LIS", "F", f"C{i % 50}"), f"d{i}") for i in range(2000)]

    def put(share: list[tuple[tuple[str, str, str], str]]) -> None:
        for key, digest in share:
            journal.put(key, digest, "AA", b"ack")

    workers = [threading.Thread(target=put, args=(rows[n::8],)) for n in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    journal.put(("LIS", "F", "C0"), "last", "CA", b"last ack")  # a reused control ID: the newest ACK wins
    assert journal.get(("LIS", "F", "C0")).digest == "last"
    assert journal.count() == 50 and journal._pending == {}  # count() waits for the writer
    journal.close()
    reopened = AckJournal(tmp_path / "acks.db")
    try:
        stored = reopened.get(("LIS", "F", "C0"))
        assert (stored.digest, stored.code, stored.ack) == ("last", "CA", b"last ack")
    finally:
        reopened.close()


def _python_hl7_reps(seg, n: int) -> list[list[list[str]]]:  # type: ignore[no-untyped-def]
    """Field n of a python-hl7 segment as repetitions → components → subcomponents, unescaped."""
    if n >= len(seg):
        return []
    def text(value: str) -> str:
        return hl7lib.util.unescape(seg, value).replace("\r", "\n")
    return [[[text(rep)]] if isinstance(rep, str) else
            [[text(comp)] if isinstance(comp, str) else [text(str(s)) for s in comp] for comp in rep]
            for rep in seg[n]]


ODD = ("MSH|^~\\&|A\\F\\B|FAC^X&Y|R|R|20240101||ORU^R01|C1|P|2.5.1\r"
       "PID|1||1^^^&2.16&ISO^NNCHN~2^^^X||N\\S\\M^\\T\\x\\.br\\y||\r"
       "OBX|1|ST|A^B&C&^L~D||x\\E\\y\\X41\\z^^~||||F|\rZZZ\rNTE|  ")


@pytest.mark.parametrize("text", [decode(raw)[0] for raw in (CHAOYANG, CORRECTION, WUHAN_GBK, XUHUI)] + [
    ODD, "MSH|^~|A|B|||20240101||ORU^R01|C2|P|2.5\rOBX|1|a&b^c~d&e",  # MSH-2 short: defaults for the rest
    "MSH#$%!@#A#B#C#D#20240101##ORU$R01#C3#P#2.4\rOBX#1#NM#X$Y@Z%W#5$6%7",  # other separators
])
def test_the_segment_split_gives_python_hl7s_tree(text: str) -> None:
    """Every field reads the same as through python-hl7's parser (repetitions, components, subcomponents,
    escapes), and the duplicate digest is the one computed from python-hl7's rendering before."""
    message, _ = parse_header(text)
    theirs = hl7lib.parse(message.text)
    assert [str(s[0]) for s in theirs] == [s.name for s in message.segments]
    for seg, ours in zip(theirs, message.segments, strict=True):
        assert len(seg) == len(ours.fields)
        for n in range(3 if ours.name == "MSH" else 1, len(seg) + 2):
            assert ours.reps(n) == _python_hl7_reps(seg, n), (ours.loc(n), text)
            assert ours.raw(n) == (str(seg[n]) if n < len(seg) else "")
    msh = theirs.segment("MSH")
    if len(msh) > 7:
        msh[7] = msh.create_field([""])
    before = hmac.new(TEST_KEY, b"hrx-hl7-ack:" + str(theirs).encode(), hashlib.sha256).hexdigest()
    assert Hl7Receiver._digest(SimpleNamespace(pseudonymizer=SimpleNamespace(key=TEST_KEY)), message) == before


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


def test_an_incoming_ack_is_not_acknowledged(receiver) -> None:  # type: ignore[no-untyped-def]
    ack = b"MSH|^~\\&|A|B|HRX|HRX|20240101||ACK^R01^ACK|X1|P|2.5.1\rMSA|AA|Q1"
    assert receiver.handle(ack).ack is None


def test_split_batch_files() -> None:
    messages = split_batch(BATCH.read_bytes())
    assert len(messages) == 2 and all(m.startswith(b"MSH|") for m in messages)
    assert b"\n" not in messages[0] and b"CY-B-0002" in messages[1]
    orphan = split_batch(b"PID|1\nOBX|1\n" + CHAOYANG)
    assert len(orphan) == 2 and orphan[0].startswith(b"PID")
    assert split_batch(mllp.frame(CHAOYANG) + mllp.frame(CORRECTION)) == [CHAOYANG, CORRECTION]


# --------------------------------------------------------------------------------------------------- MLLP


def _pair(max_bytes: int = 1024) -> tuple[socket.socket, mllp.FrameReader]:
    a, b = socket.socketpair()
    return a, mllp.FrameReader(b, max_bytes=max_bytes, idle_timeout=5, frame_timeout=5)


def test_frame_reader_resyncs_on_broken_framing() -> None:
    peer, reader = _pair(max_bytes=100)
    peer.sendall(b"garbage" + mllp.frame(b"one") + b"\r\n" + b"\x0bhalf a fra" + mllp.frame(b"two")
                 + b"\x0bthree\x1c" + mllp.frame(b"x" * 500) + mllp.frame(b"four"))
    peer.sendall(b"\x0bcut off")
    peer.close()
    got = [reader.read() for _ in range(6)]
    assert [f.payload for f in got[:3]] == [b"one", b"two", b"three"]  # FS without CR accepted
    assert got[3].oversize and got[3].size == 500 and got[3].payload == b"x" * 500
    assert got[4].payload == b"four" and got[5] is None  # EOF inside a block: nothing delivered
    assert reader.discarded == len(b"garbage") + len(b"\x0bhalf a fra")


def test_frame_reader_streams_an_oversized_block_without_buffering_it() -> None:
    peer, reader = _pair(max_bytes=1000)
    big = b"MSH|^~\\&|" + b"y" * 200_000

    def send() -> None:
        peer.sendall(mllp.frame(big) + mllp.frame(b"next"))

    threading.Thread(target=send, daemon=True).start()
    first = reader.read()
    assert first.oversize and first.size == len(big) and first.payload == big[:mllp.HEAD_BYTES]
    assert reader.read().payload == b"next"
    peer.close()


@pytest.fixture
def server(receiver) -> Iterator[mllp.MLLPServer]:  # type: ignore[no-untyped-def]
    with mllp.MLLPServer(("127.0.0.1", 0), receiver, max_bytes=receiver.max_bytes, max_connections=2) as srv:
        yield srv


def test_mllp_server_survives_broken_frames_and_oversized_messages(server, receiver) -> None:  # type: ignore[no-untyped-def]
    with mllp.MLLPClient(*server.address) as client:
        client.send_raw(b"GET / HTTP/1.1\r\n\r\n")  # not MLLP: discarded
        client.send_raw(b"\x0bMSH|^~\\&|truncated by a sender restart")
        assert fields(client.send(CHAOYANG))["MSA-1"] == "AA"
        big = replace(CHAOYANG, "空腹采血", "空腹采血" + "长" * 40_000)
        refused = fields(client.send(big))
        assert (refused["MSA-1"], refused["MSA-2"]) == ("AE", "CY20240315000123")
        assert "exceeds the limit of 65536 bytes" in refused["ERR-8"]
        assert fields(client.send(renumber(CHAOYANG, 2)))["MSA-1"] == "AA"  # the connection is still usable
        not_hl7 = fields(client.send(b"hello"))
        assert (not_hl7["MSA-1"], not_hl7["ERR-3"][:3]) == ("AE", "100")
        gbk = fields(client.send(replace(WUHAN_GBK, "WH0316-0042", "WH-T-1", "gbk")), "gb18030")
        assert gbk["MSA-1"] == "AA" and gbk["MSH-18"] == "GBK"  # answered in GBK (its codes stay unmapped here)
    assert len(receiver.publisher.records) == 4  # 1 + 1 + the GBK message's 2 reports


def test_mllp_connections_are_bounded_and_concurrent(server) -> None:  # type: ignore[no-untyped-def]
    with mllp.MLLPClient(*server.address) as a, mllp.MLLPClient(*server.address) as b:
        assert fields(a.send(renumber(CHAOYANG, 3)))["MSA-1"] == "AA"
        assert fields(b.send(renumber(CHAOYANG, 4)))["MSA-1"] == "AA"
        with mllp.MLLPClient(*server.address) as c:  # over max_connections=2: closed at once
            with pytest.raises((ConnectionError, OSError)):
                c.send(renumber(CHAOYANG, 5))
    wait_for(lambda: server.open_connections == 0)  # the server notices the closed connections
    with mllp.MLLPClient(*server.address) as d:  # slots are given back
        assert fields(d.send(renumber(CHAOYANG, 6)))["MSA-1"] == "AA"


# ------------------------------------------------------------------------------------ end to end (Kafka)


def _count(database, where: str = "1=1", **params) -> int:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM results WHERE {where}"), params).scalar_one())


def _listener(book, pseudonymizer, publisher, journal, institution):  # type: ignore[no-untyped-def]
    return mllp.MLLPServer(("127.0.0.1", 0), Hl7Receiver(institution, book, pseudonymizer, publisher, journal))


def test_end_to_end_corrections_duplicates_and_stale_resends(broker, database, engine_thread, book, pseudonymizer,
                                                             tmp_path) -> None:  # type: ignore[no-untyped-def]
    publisher = CountingPublisher(broker.bootstrap, timeout_s=10)
    journal = AckJournal(tmp_path / "hl7-acks.db")
    servers = {i: _listener(book, pseudonymizer, publisher, journal, i).start()
               for i in ("bj-chaoyang-001", "hb-wuhan-001", "sh-xuhui-001")}
    try:
        with mllp.MLLPClient(*servers["bj-chaoyang-001"].address) as cy:
            first = cy.send(CHAOYANG)
            assert fields(first)["MSA-1"] == "AA"
            assert cy.send(CHAOYANG) == first  # duplicate: the stored ACK, byte for byte
            assert publisher.published == 1
            assert fields(cy.send(CORRECTION))["MSA-1"] == "AA"
            stale = replace(CHAOYANG, "CY20240315000123", "CY20240315000999")  # the final again, new control ID
            assert fields(cy.send(stale))["MSA-1"] == "AA"
        with mllp.MLLPClient(*servers["hb-wuhan-001"].address) as wh:
            ack = wh.send(WUHAN_GBK)
            assert fields(ack, "gb18030")["MSA-1"] == "AA" and ack.decode("gb18030")  # answered in its charset
        with mllp.MLLPClient(*servers["sh-xuhui-001"].address) as xh:
            assert fields(xh.send(XUHUI))["MSA-1"] == "AA"
        assert publisher.published == 6  # the stale final is published; the store absorbs it
        wait_for(lambda: _count(database) == 5)
        assert _count(database, "issuer = 'bj-chaoyang-001' AND result_id = 'CY2403150088'") == 2
        with database.connect() as conn:
            head = conn.execute(text("SELECT version FROM result_heads WHERE result_id = 'CY2403150088'")).scalar_one()
            glu = conn.execute(text(
                "SELECT o.value FROM observations o JOIN results r ON r.id = o.result_pk "
                "WHERE r.result_id = 'CY2403150088' AND r.version > 2 AND o.local_code = 'GLU'")).scalar_one()
            stored = " ".join(row[0] for row in conn.execute(text("SELECT event FROM results")))
        assert head > 2 and glu == 7.2  # the stale final did not move the head back
        assert CHAOYANG_ID not in stored and WUHAN_ID not in stored
        assert "白细胞计数" in stored  # GBK text arrived intact
    finally:
        for srv in servers.values():
            srv.stop()
        publisher.close()
        journal.close()


def test_broker_down_refuses_everything_then_stores_retries_exactly_once(broker, database, book, pseudonymizer,
                                                                          tmp_path) -> None:  # type: ignore[no-untyped-def]
    publisher = Publisher(broker.bootstrap, timeout_s=1.0)
    journal = AckJournal(tmp_path / "hl7-acks.db")
    server = _listener(book, pseudonymizer, publisher, journal, "bj-chaoyang-001").start()
    replacement: EmbeddedBroker | None = None
    engine: tuple[threading.Event, threading.Thread] | None = None
    retried = [renumber(CHAOYANG, n) for n in (10, 11)]
    try:
        with mllp.MLLPClient(*server.address) as client:
            assert fields(client.send(CHAOYANG))["MSA-1"] == "AA"  # the producer is connected when the broker dies
            port = broker.port
            broker.stop()
            answers = [fields(client.send(raw)) for raw in retried]
            assert [a["MSA-1"] for a in answers] == ["AE", "AE"]  # refusals only: zero positive acknowledgements
            assert all(a["ERR-3"].startswith("207^") and "resend later" in a["ERR-8"] for a in answers)
            assert journal.count() == 1
            replacement = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-2.log").start()
            ensure_topics(replacement.bootstrap, DEFAULT_PARTITIONS)
            engine = _engine(replacement.bootstrap, database)
            for raw in retried + retried:  # the sender retries; then resends once more (duplicates)
                assert fields(client.send(raw))["MSA-1"] == "AA"
        wait_for(lambda: _count(database) == 2)
        for n in (10, 11):
            assert _count(database, "result_id = :r", r=f"CY-R-{n:06d}") == 1
        # (the first message went to the old tansu broker, which keeps nothing once stopped: memory-only)
        assert journal.count() == 3
    finally:
        server.stop()
        publisher.close()
        journal.close()
        if engine:
            engine[0].set()
            engine[1].join(15)
        if replacement:
            replacement.stop()


def _engine(bootstrap: str, database) -> tuple[threading.Event, threading.Thread]:  # type: ignore[no-untyped-def]
    """An engine in a fresh consumer group on the restarted (empty, memory-only) broker."""
    from exchange.engine import ResultEngine

    stop = threading.Event()
    worker = ResultEngine(bootstrap, database, f"test-{uuid.uuid4().hex[:8]}", Publisher(bootstrap))
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_file_mode_publishes_batches_and_exits_1_on_a_refusal(broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from exchange.cli import main

    env = {"HRX_KAFKA_BOOTSTRAP": broker.bootstrap, "HRX_VAR_DIR": str(tmp_path / "var"),
           "HRX_PSEUDONYM_KEY": TEST_KEY.decode()}
    runner = CliRunner()
    result = runner.invoke(main, ["adapter", "hl7", "--institution", "bj-chaoyang-001", str(BATCH)], env=env)
    assert result.exit_code == 0, result.output
    assert "2 message(s) accepted, 0 refused" in result.output
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(CHAOYANG + replace(CORRECTION, "110105198003120024", "110105198003120021"))
    result = runner.invoke(main, ["adapter", "hl7", "--institution", "bj-chaoyang-001", str(bad)], env=env)
    assert result.exit_code == 1
    assert "1 message(s) accepted, 1 refused" in result.output and "PID^1^3^2" in result.output
    assert "110105198003120021" not in result.output
    assert (tmp_path / "var" / "hl7-acks.db").exists()
    usage = runner.invoke(main, ["adapter", "hl7", "--institution", "bj-chaoyang-001"], env=env)
    assert usage.exit_code == 2


def test_a_second_correction_later_is_a_newer_version() -> None:
    first = _with_statuses("C", ["C"])
    second = first.replace(b"20240315092500", b"20240316101500")  # OBR-22: corrected again the next day
    _, [one] = parse_message(first, "bj-chaoyang-001")
    _, [two] = parse_message(second, "bj-chaoyang-001")
    assert two.version > one.version > 2
    cancelled = first.replace(b"|||C", b"|||X").replace(b"||||C", b"||||X")
    _, [void] = parse_message(cancelled, "bj-chaoyang-001")
    assert void.status == "cancelled" and void.version == one.version + 1

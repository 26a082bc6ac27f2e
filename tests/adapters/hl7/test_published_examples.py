"""Regression corpus: published HL7 v2 ORU^R01 samples through the real HL7 adapter.

Each sample of tests/data/hl7/published (python-hl7's, simple-hl7's and hl7-standard's, see its README) is
run through :class:`~adapters.hl7.Hl7Receiver` twice: as published, by a listener with the default options,
and localised (:func:`localise`) by a listener for that institution that also takes test messages. Each run
has its expected outcome: refused with which ACK, error code, location and message — or stored as which
report, with how many observations and which of them map to which unified item. The localised messages
that are stored are also delivered over MLLP to the broker, the engine and the store.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import hl7 as hl7lib
import pytest
from sqlalchemy import text

from adapters.hl7 import AckJournal, Hl7Receiver, mllp
from adapters.publish import Publisher
from schemas import events
from tests.fakes import FakePublisher
from tests.adapters.hl7.hl7data import DATA, fields
from tests.fixtures.waiting import wait_for

PUBLISHED = DATA / "published"
INSTITUTION = "bj-chaoyang-001"
RESIDENT_ID = "110105198003120024"
_SEGMENT_ENDS = re.compile(r"(\r\n|\r|\n)")


def localise(raw: bytes, institution: str = INSTITUTION, resident_id: str = RESIDENT_ID) -> bytes:
    """The sample with only what the exchange needs added: a PID-3 repetition with the resident ID (type
    NNCHN) after the published identifiers, and the institution's ID in MSH-4."""
    message = raw.decode("utf-8")
    field_sep = message[3]
    components, repetitions = message[4], message[5]
    pieces = _SEGMENT_ENDS.split(message)  # segments and their terminators, as published
    for i, segment in enumerate(pieces):
        fields_ = segment.split(field_sep)
        if fields_[0] == "MSH":
            fields_ += [""] * (5 - len(fields_))
            fields_[3] = institution  # MSH-4: MSH-1 is the separator itself
        elif fields_[0] == "PID":
            fields_ += [""] * (4 - len(fields_))
            resident = f"{resident_id}{components * 4}NNCHN"
            fields_[3] = f"{fields_[3]}{repetitions}{resident}" if fields_[3] else resident
        else:
            continue
        pieces[i] = field_sep.join(fields_)
    return "".join(pieces).encode("utf-8")


@dataclass(frozen=True)
class Refused:
    """Refused: the ACK code, ERR-3's HL7 table 0357 code, ERR-2's location and the message (MSA-3, ERR-8)."""

    ack: str
    error: str
    location: str
    message: str


@dataclass(frozen=True)
class Stored:
    """Accepted (AA) and published as one lab result."""

    result_id: str
    status: str
    report_code: str  # the report's local code (OBR-4)
    report_name: str
    item: str | None  # the report's unified item
    item_issue: str | None  # why the report has none (mapping_issue_code)
    observations: int
    mapped: dict[str, int] = field(default_factory=dict)  # unified item → observations mapped to it
    units: tuple[str | None, ...] = ()
    ranges: tuple[tuple[float | None, float | None, str | None] | None, ...] = ()


@dataclass(frozen=True)
class Case:
    file: str
    published: Refused
    localised: Stored | Refused


NO_RESIDENT_ID = Refused("AE", "101", "PID^1^3", "PID-3 carries no resident ID (identifier type NNCHN or assigning "
                                                 "authority 2.16.156.10011.1.3)")
TEST_MESSAGE = "processing ID T is not accepted here (P)"

CASES = [
    # OBX 2 of python-hl7's sample is of value type FN (family name), not a value type of HL7 table 0125:
    # the message is all-or-nothing, so the glucose in OBX 1 is refused with it.
    Case("python-hl7-sample_hl7.hl7",
         Refused("AE", "103", "OBX^2^2", "value type 'FN' is not supported (NM, SN, ST, TX, FT, CE, CWE, CNE, ED, "
                                         "DT, TS, DTM, RP)"),
         Refused("AE", "103", "OBX^2^2", "value type 'FN' is not supported (NM, SN, ST, TX, FT, CE, CWE, CNE, ED, "
                                         "DT, TS, DTM, RP)")),
    Case("python-hl7-rep_sample_hl7.hl7",
         Refused("AE", "100", "OBR", "the message has no OBR segment: nothing to report"),
         Refused("AE", "100", "OBR", "the message has no OBR segment: nothing to report")),
    # The lipid panel's local codes (JHDL, JTRIG, …) are in no mapping table of the institution. Its units
    # are sent as CD:289^mg/dL (a local code, the unit in the text) and its ranges as 35-150^35^150.
    Case("simple-hl7-oru.hl7", NO_RESIDENT_ID,
         Stored("185L29839X64489JLPF", "final", "JLPF", "Lipid Panel - C", None, "unknown_code", 5, {},
                units=("mg/dL",) * 5,
                ranges=((40.0, None, ">40"), (35.0, 150.0, None), None, (0.0, 100.0, None), (90.0, 200.0, None)))),
    # A vaccine adverse event report (VAERS), MSH-15 AL: enhanced mode. Its OBR carry no order number.
    Case("simple-hl7-oru-imm.hl7", Refused("CR", "202", "MSH^1^11", TEST_MESSAGE),
         Refused("CE", "101", "OBR^1^3", "OBR-3 (filler order number) or OBR-2 (placer order number) is required: "
                                         "it identifies the result")),
    # MSH-2 "^~ &": no escape character, so "Automated Bld Cnt" is text, not "Automated" + escape "Bld".
    # WBC and RBC map; the report's own code 681X does not, and its results name two items.
    Case("hl7-standard-input.hl7", Refused("AR", "202", "MSH^1^11", TEST_MESSAGE),
         Stored("201103290820062979", "final", "681X", "Automated Bld Cnt", None, "ambiguous", 2,
                {"L0165": 1, "L0166": 1}, units=("10*9/L", "10*12/L"),
                ranges=((3.8, 11.2, None), (3.9, 5.2, None)))),
]


def _receiver(book, pseudonymizer, localised: bool) -> Hl7Receiver:  # type: ignore[no-untyped-def]
    if localised:  # hrx adapter hl7 --institution … --facility … --processing-id P --processing-id T
        return Hl7Receiver(INSTITUTION, book, pseudonymizer, FakePublisher(), facilities=(INSTITUTION,),
                           processing_ids=("P", "T"))
    return Hl7Receiver(INSTITUTION, book, pseudonymizer, FakePublisher())  # hrx adapter hl7 --institution …


def _expect(receiver: Hl7Receiver, raw: bytes, expected: Stored | Refused) -> None:
    outcome = receiver.handle(raw)
    ack = fields(outcome.ack or b"")
    published = [json.loads(r.value) for r in receiver.publisher.records]  # type: ignore[attr-defined]
    if isinstance(expected, Refused):
        assert (outcome.code, ack["MSA-1"], ack["ERR-2"], ack["ERR-3"].split("^")[0]) == (
            expected.ack, expected.ack, expected.location, expected.error), ack
        assert outcome.text == ack["MSA-3"] == ack["ERR-8"] == expected.message
        assert published == []
        return
    assert (outcome.code, ack["MSA-1"], ack["MSA-3"]) == ("AA", "AA", "1 result(s) committed"), ack
    [event] = published
    events.validate("lab-result.v1", event)
    assert RESIDENT_ID not in json.dumps(event)
    assert (event["issuer"], event["result_id"], event["status"]) == (INSTITUTION, expected.result_id, expected.status)
    report = event["item"]
    assert (report["local_code"], report["local_name"], report["unified_code"], report["mapping_issue_code"]) == (
        expected.report_code, expected.report_name, expected.item, expected.item_issue)
    observations = event["observations"]
    assert len(observations) == expected.observations
    mapped = Counter(o["item"]["unified_code"] for o in observations if o["item"]["unified_code"])
    assert dict(mapped) == expected.mapped
    assert tuple(o["unit"] for o in observations) == expected.units
    assert tuple(r and (r["low"], r["high"], r["text"]) for r in (o["reference_range"] for o in observations)) \
        == expected.ranges


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_published_samples(book, pseudonymizer, case: Case) -> None:  # type: ignore[no-untyped-def]
    raw = (PUBLISHED / case.file).read_bytes()
    _expect(_receiver(book, pseudonymizer, localised=False), raw, case.published)
    _expect(_receiver(book, pseudonymizer, localised=True), localise(raw), case.localised)


def test_the_corpus_is_the_readme_s() -> None:
    """Every sample file is a case and is listed in the README with its source, and nothing else is kept."""
    readme = (PUBLISHED / "README.md").read_text("utf-8")
    files = sorted(p.name for p in PUBLISHED.iterdir() if p.name != "README.md")
    assert files == sorted(c.file for c in CASES)
    assert all(f"`{name}`" in readme for name in files)


def test_a_blank_escape_character_is_answered_with_one_the_sender_can_read(book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    """hl7-standard's sample declares no escape character (MSH-2 ``^~ &``): the ACK declares ``\\`` and
    escapes with it what it echoes, so the sender reads back its own MSH-3 and the text unchanged."""
    raw = localise((PUBLISHED / "hl7-standard-input.hl7").read_bytes())
    raw = raw.replace(b"|SomeSystem|", b"|Some\\System|").replace(b"|T|2.3", b"|D|2.3")
    refused = _receiver(book, pseudonymizer, localised=True).handle(raw)
    ack = hl7lib.parse((refused.ack or b"").decode("utf-8"))
    msh = ack.segment("MSH")
    assert (str(msh[2]), ack.unescape(str(msh[5]))) == ("^~\\&", "Some\\System")
    assert fields(refused.ack or b"")["MSA-3"] == "processing ID D is not accepted here (P, T)"


@pytest.mark.integration
def test_localised_samples_are_stored_over_mllp(broker, database, engine_thread, book, pseudonymizer,  # type: ignore[no-untyped-def]
                                                tmp_path: Path) -> None:
    stored = [c for c in CASES if isinstance(c.localised, Stored)]
    publisher = Publisher(broker.bootstrap, timeout_s=10)
    journal = AckJournal(tmp_path / "hl7-acks.db")
    receiver = Hl7Receiver(INSTITUTION, book, pseudonymizer, publisher, journal, facilities=(INSTITUTION,),
                           processing_ids=("P", "T"))
    server = mllp.MLLPServer(("127.0.0.1", 0), receiver).start()
    try:
        with mllp.MLLPClient(*server.address) as client:
            for case in stored:
                assert fields(client.send(localise((PUBLISHED / case.file).read_bytes())))["MSA-1"] == "AA"

        def rows() -> list[tuple[str, str | None, int]]:
            with database.connect() as conn:
                return sorted(conn.execute(text(
                    "SELECT r.result_id, r.unified_code, count(o.result_pk) FROM results r "
                    "LEFT JOIN observations o ON o.result_pk = r.id GROUP BY r.result_id, r.unified_code")).all())

        wait_for(lambda: len(rows()) == len(stored))
        assert rows() == sorted((c.localised.result_id, c.localised.item, c.localised.observations)  # type: ignore[union-attr]
                                for c in stored)
    finally:
        server.stop()
        publisher.close()
        journal.close()

"""Inputs on which ``python -m fuzz hl7`` found the receiver failing with an internal error (tests/data/hl7/
fuzz-crashes/): each must now be refused with the HL7 error that names the field at fault."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from adapters.hl7 import Hl7Error, Hl7Receiver, parse_message, python_hl7_compat, split_batch
from tests.adapters.hl7.hl7data import broken, fields

CRASHES = Path(__file__).parent.parent.parent / "data" / "hl7" / "fuzz-crashes"


def test_a_utc_offset_of_88_hours_is_refused_at_its_field(receiver: Hl7Receiver) -> None:
    # OBR-22 "20240315092500+8800": python-hl7 made a time zone of 88 hours, which the envelope could not print.
    [message] = split_batch((CRASHES / "obr22-offset-of-88-hours.hl7").read_bytes())
    outcome = receiver.handle(message)
    assert outcome.code == "AE" and outcome.published == 0
    ack = fields(outcome.ack)
    assert ack["ERR-2"] == "OBR^2^22" and ack["ERR-3"].startswith("102^")


@pytest.mark.parametrize("offset", ["+2400", "-2400", "+0860", "+9999"])
def test_an_offset_that_is_no_utc_offset_is_not_a_time_stamp(offset: str) -> None:
    with pytest.raises(Hl7Error) as refused:
        parse_message(broken("20240315092500+0800", f"20240315092500{offset}"), "bj-chaoyang-001")
    assert refused.value.location == "OBR^1^22" and refused.value.hl7_code == "102"


@pytest.mark.parametrize(("offset", "minutes"), [("+2359", 23 * 60 + 59), ("-1200", -12 * 60), ("+0545", 5 * 60 + 45)])
def test_real_utc_offsets_still_read(offset: str, minutes: int) -> None:
    _, [report] = parse_message(broken("20240315092500+0800", f"20240315092500{offset}"), "bj-chaoyang-001")
    assert report.reported_at.utcoffset() == timedelta(minutes=minutes)


def test_a_repeat_count_that_is_not_a_number_is_refused_at_its_field(receiver: Hl7Receiver) -> None:
    # MSH-7 "2024\.sp8.\": python-hl7's unescape raised ValueError, answered as an internal error (207). The
    # fuzzer's artifact was lost (its process died of SIGALRM while reporting); the file is rebuilt from the
    # traceback in its log.
    outcome = receiver.handle((CRASHES / "msh7-repeat-count-not-a-number.hl7").read_bytes())
    assert outcome.code == "AE"
    ack = fields(outcome.ack)
    assert ack["ERR-2"] == "MSH^1^7" and ack["ERR-3"].startswith("102^")


def test_a_repeat_count_too_large_is_refused_before_it_costs_memory() -> None:
    text_result = broken("OBX|2|NM|AST^谷草转氨酶^L||31|", "OBX|2|TX|AST^谷草转氨酶^L||见备注\\.sp999999999\\|")
    with pytest.raises(Hl7Error) as refused:  # thirteen bytes asking for a gigabyte of line breaks
        parse_message(text_result, "bj-chaoyang-001")
    assert refused.value.hl7_code == "102" and refused.value.location == "OBX^2^5"
    assert f"over {python_hl7_compat.MAX_REPEAT}" in refused.value.message


@pytest.mark.parametrize(("text", "expected"), [
    ("\\.sp3\\", "\r" * 3),
    (f"\\.sk{python_hl7_compat.MAX_REPEAT}\\", " " * python_hl7_compat.MAX_REPEAT),
    ("\\F\\.sp9999", "|.sp9999"),  # text after an escape sequence, not a sequence
])
def test_repeat_counts_up_to_the_limit_are_undone(text: str, expected: str) -> None:
    assert python_hl7_compat.unescape(text, "|^~\\&") == expected


def test_a_repeat_count_over_the_limit_raises_in_both_implementations() -> None:
    for unescape in (python_hl7_compat.unescape, python_hl7_compat.bounded(python_hl7_compat.unescape_fallback)):
        with pytest.raises(ValueError):
            unescape(f"\\.sp{python_hl7_compat.MAX_REPEAT + 1}\\", "|^~\\&")


@pytest.mark.parametrize(("birth", "year"), [("1¹800312", None), ("１９８００312", 1980)])
def test_a_birth_date_that_only_looks_like_a_number(birth: str, year: int | None) -> None:
    # "¹".isdigit() is true and int() refuses it: the same mistake the fuzzer found in the DICOM adapter
    _, [report] = parse_message(broken("||19800312|F|", f"||{birth}|F|"), "bj-chaoyang-001")
    assert report.patient.birth_year == year

"""Scrubbing resident IDs from free text: by the ID's shape wherever it stands, and inside longer digit runs."""
from __future__ import annotations

import re
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from schemas.resident_id import PLACEHOLDER, make_resident_id, scrub

RID = make_resident_id("11010519491231002")  # check character X


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


#: Valid resident IDs (GB 11643): a division code, a birth date, a sequence number and their check character.
resident_ids = st.builds(lambda region, born, sequence: make_resident_id(f"{region:06d}{born:%Y%m%d}{sequence:03d}"),
                         st.integers(110000, 829999), st.dates(date(1900, 1, 1), date(2099, 12, 31)),
                         st.integers(0, 999))
#: The forms a resident ID is written in: as issued, with a lower-case x, in full-width characters.
written = st.sampled_from([str, str.lower, _full_width])


def test_an_id_followed_or_preceded_by_letters_is_scrubbed() -> None:
    assert RID.endswith("X")
    assert scrub(f"PID|||{RID}NNCHN|") == f"PID|||{PLACEHOLDER}NNCHN|"
    plain = make_resident_id("32010219800101123")
    assert scrub(f"id={plain}NNCHN") == f"id={PLACEHOLDER}NNCHN"
    assert scrub(f"ID{plain}abc") == f"ID{PLACEHOLDER}abc"
    assert scrub(f"{RID.lower()}nnchn") == f"{PLACEHOLDER}nnchn"


def test_the_shape_alone_is_scrubbed_even_with_a_wrong_check_character() -> None:
    wrong = RID[:17] + "5"
    assert scrub(f"patient {wrong}.") == f"patient {PLACEHOLDER}."


def test_an_id_glued_to_other_digits_is_scrubbed_with_the_digits() -> None:
    assert scrub(f"acc 7{RID}") == f"acc {PLACEHOLDER}"
    assert scrub(f"42{RID}1") == f"{PLACEHOLDER}1"  # the X ends the run
    plain = make_resident_id("32010219800101123")
    assert scrub(f"MSH{plain}99|") == f"MSH{PLACEHOLDER}|"


def test_other_numbers_are_left_alone() -> None:
    assert scrub("order 12345678901234567890") == "order 12345678901234567890"
    assert scrub("acc 1234567890123456") == "acc 1234567890123456"  # 16 digits
    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    assert scrub(uid) == uid
    # a long run whose 18-character windows have no birth date in range: not an ID
    assert scrub("9" * 40) == "9" * 40


@given(resident_ids, written, st.text(), st.text())
def test_no_resident_id_survives_scrub_in_any_text(rid, form, before, after) -> None:  # type: ignore[no-untyped-def]
    shown = form(rid)
    scrubbed = scrub(before + shown + after)
    assert shown not in scrubbed
    assert rid not in scrubbed


@given(st.text())
def test_text_without_a_run_of_17_digits_is_unchanged(text) -> None:  # type: ignore[no-untyped-def]
    if not re.search(r"\d{17}", text):
        assert scrub(text) == text

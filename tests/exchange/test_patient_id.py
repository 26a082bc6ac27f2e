import pytest

from schemas.resident_id import InvalidResidentId, check_character, make_resident_id, normalize_resident_id, scrub

# GB 11643 example number from the standard's own worked example (11010519491231002X).
STANDARD_EXAMPLE = "11010519491231002X"


def test_check_character_matches_the_standard_example() -> None:
    assert check_character(STANDARD_EXAMPLE[:17]) == "X"
    assert normalize_resident_id(STANDARD_EXAMPLE) == STANDARD_EXAMPLE


@pytest.mark.parametrize("text", ["11010519491231002x", " 110105 19491231002X ", "１１０１０５１９４９１２３１００２Ｘ"])
def test_normalization_accepts_lower_x_blanks_and_full_width(text: str) -> None:
    assert normalize_resident_id(text) == STANDARD_EXAMPLE


@pytest.mark.parametrize("text, why", [
    ("110105194912310021", "check character"),
    ("11010519491231002", "18 characters"),
    ("1101051949123100XX", "17 digits"),
    ("110105194913310028", "birth date"),
])
def test_invalid_numbers_are_refused_without_echoing_them(text: str, why: str) -> None:
    with pytest.raises(InvalidResidentId, match=why) as info:
        normalize_resident_id(text)
    assert text not in str(info.value)


def test_scrub_removes_resident_ids_from_text() -> None:
    rid = make_resident_id("32010219800101123")
    assert scrub(f"PID|||{rid}^^^^NNCHN|") == "PID|||[resident-id]^^^^NNCHN|"
    assert scrub("order 12345678901234567890") == "order 12345678901234567890"

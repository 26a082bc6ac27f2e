import os
import stat

import pytest

from schemas.resident_id import InvalidResidentId, check_character, make_resident_id, normalize_resident_id, scrub

from adapters.pseudonymize import Pseudonymizer

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


def test_pseudonym_is_keyed_and_stable() -> None:
    a, b = Pseudonymizer(b"k" * 32), Pseudonymizer(b"j" * 32)
    assert a.pseudonym(STANDARD_EXAMPLE) == a.pseudonym(STANDARD_EXAMPLE.lower())
    assert a.pseudonym(STANDARD_EXAMPLE) != b.pseudonym(STANDARD_EXAMPLE)
    assert len(a.pseudonym(STANDARD_EXAMPLE)) == 64 and a.key_id != b.key_id
    with pytest.raises(InvalidResidentId):
        a.pseudonym("110105194912310021")


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Pseudonymizer(b"short")


def test_key_file_is_created_once_and_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = Pseudonymizer.from_settings(None, None, tmp_path)
    second = Pseudonymizer.from_settings(None, None, tmp_path)
    assert first.key == second.key
    assert stat.S_IMODE(os.stat(tmp_path / "pseudonym.key").st_mode) == 0o600


def test_missing_configured_key_file_is_an_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        Pseudonymizer.from_settings(None, tmp_path / "absent.key", tmp_path)


def test_scrub_removes_resident_ids_from_text() -> None:
    rid = make_resident_id("32010219800101123")
    assert scrub(f"PID|||{rid}^^^^NNCHN|") == "PID|||[resident-id]^^^^NNCHN|"
    assert scrub("order 12345678901234567890") == "order 12345678901234567890"

"""The fence around python-hl7's internals: used on the release line it was written for, a fallback with the
same results on any other (forced here), and one warning when it stands down."""
from __future__ import annotations

import importlib.metadata
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.hl7 import parse_message, python_hl7_compat
from tests.adapters.hl7.hl7data import CHAOYANG, CORRECTION, WUHAN_GBK, XUHUI

PYTHON_HL7 = python_hl7_compat.choose_unescape("%d.%d.0" % python_hl7_compat.WRITTEN_FOR)
FALLBACK = python_hl7_compat.unescape_fallback
STANDARD = "|^~\\&"  # field, component, repetition, escape, subcomponent
OTHER = "#$%!@"


def test_the_installed_python_hl7_is_the_release_it_was_written_for() -> None:
    """pyproject.toml pins that release line: a different one here means the pin and the module disagree."""
    installed = python_hl7_compat.installed_version()
    assert installed == importlib.metadata.version("hl7")
    assert python_hl7_compat.choose_unescape(installed) is not FALLBACK
    assert python_hl7_compat.unescape is not FALLBACK
    assert PYTHON_HL7 is not FALLBACK


@pytest.mark.parametrize("version", ["0.5.0", "0.3.9", "1.0", "0", "not-a-version", None])
def test_any_other_release_stands_down_with_one_warning(version: str | None,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=python_hl7_compat.__name__):
        chosen = python_hl7_compat.choose_unescape(version)
    assert chosen is FALLBACK
    warnings = [r for r in caplog.records if r.name == python_hl7_compat.__name__]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "stands down" in warnings[0].getMessage()


def test_the_version_is_read_from_the_installed_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: {"hl7": "0.5.1"}[name])
    assert python_hl7_compat.installed_version() == "0.5.1"
    assert python_hl7_compat.choose_unescape(python_hl7_compat.installed_version()) is FALLBACK

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert python_hl7_compat.installed_version() is None
    assert python_hl7_compat.choose_unescape(None) is FALLBACK


@pytest.mark.parametrize("separators, text, expected", [
    (STANDARD, "no escapes", "no escapes"),
    (STANDARD, "", ""),
    (STANDARD, "a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f", "a|b^c~d&e\\f"),
    (OTHER, "a!F!b!S!c!R!d!T!e!E!f", "a#b$c%d@e!f"),
    (STANDARD, "\\H\\bold\\N\\", "_bold_"),
    (STANDARD, "x\\.br\\y\\.sp\\z\\.ce\\", "x\ry\rz\r"),
    (STANDARD, "\\.in\\|\\.ti\\|\\.sk\\|\\.fi\\\\.nf\\", "    |    | |"),
    (STANDARD, "\\.sp3\\\\.sk2\\", "\r\r\r  "),
    (STANDARD, "\\X414243\\", "ABC"),
    (STANDARD, "\\X41ZZ42\\", "A"),  # up to the first pair that is not hexadecimal
    (STANDARD, "\\XE78E8B\\", "\xe7\x8e\x8b"),  # one character per byte, as python-hl7 does
    (STANDARD, "a\\C2842\\b\\M2442\\c\\Zlocal\\d", "abcd"),
    (STANDARD, "a\\\\b", "ab"),
    (STANDARD, "a\\F\\b\\unterminated", "a|b"),
    (STANDARD, "王\\S\\明", "王^明"),
])
def test_escape_sequences(separators: str, text: str, expected: str) -> None:
    assert FALLBACK(text, separators) == expected
    assert PYTHON_HL7(text, separators) == expected


def test_a_repeat_count_that_is_not_a_number_raises_in_both() -> None:
    for unescape in (FALLBACK, PYTHON_HL7):
        with pytest.raises(ValueError):
            unescape("\\.spx\\", STANDARD)


_SEQUENCES = ["F", "S", "R", "T", "E", "H", "N", ".br", ".sp", ".sp2", ".sk3", ".in", ".ti", ".ce", ".fi", ".nf",
              ".spx", "X41", "X4", "XE78E8B", "X41ZZ42", "C2842", "M2442", "Zlocal", ""]
_CHARACTERS = [".", "X", "H", "0", "4", "A", "f", " ", "+", "王", "\r"]


def _tokens(separators: str) -> list[str]:
    """Whole escape sequences, lone escape characters, separators and text, so that sequences also break."""
    escape = separators[3]
    return [escape + name + escape for name in _SEQUENCES] + [escape, *separators, *_CHARACTERS]


@settings(max_examples=400)
@given(st.sampled_from([STANDARD, OTHER]).flatmap(
    lambda seps: st.tuples(st.just(seps), st.lists(st.sampled_from(_tokens(seps)), max_size=16).map("".join))))
def test_the_fallback_gives_python_hl7s_results(case: tuple[str, str]) -> None:
    separators, text = case
    try:
        expected: str | type[ValueError] = PYTHON_HL7(text, separators)
    except ValueError:
        expected = ValueError
    try:
        got: str | type[ValueError] = FALLBACK(text, separators)
    except ValueError:
        got = ValueError
    assert got == expected


@pytest.mark.parametrize("raw, institution", [(CHAOYANG, "bj-chaoyang-001"), (CORRECTION, "bj-chaoyang-001"),
                                              (WUHAN_GBK, "hb-wuhan-001"), (XUHUI, "sh-xuhui-001")])
def test_messages_parse_the_same_after_the_stand_down(raw: bytes, institution: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    header, reports = parse_message(raw, institution)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.5.0")
    monkeypatch.setattr(python_hl7_compat, "unescape",
                        python_hl7_compat.choose_unescape(python_hl7_compat.installed_version()))
    assert python_hl7_compat.unescape is FALLBACK
    assert parse_message(raw, institution) == (header, reports)

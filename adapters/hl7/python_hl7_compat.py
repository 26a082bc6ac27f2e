"""Every use of python-hl7's internals, fenced: used only on the release line it was written for.

python-hl7 documents ``hl7.parse`` and its containers. The adapter splits messages itself (:mod:`.segments`)
and borrows one undocumented piece: ``hl7.util.unescape``, called with a stand-in for a container that has
only the two attributes it reads (``esc`` and ``separators``). Nothing promises that shape across releases,
so it is used only when the installed python-hl7 is the minor release this module was written for
(:data:`WRITTEN_FOR`, read with :mod:`importlib.metadata`). On any other release, or without python-hl7,
the module stands down to :func:`unescape_fallback`, its own implementation of the same rules with the same
results, and logs one warning saying so.

HL7 v2 escape sequences undone (HL7 v2.5.1 chapter 2, "Use of escape sequences in text fields"), between
two escape characters (MSH-2 component 3, usually ``\\``):

- ``F`` ``S`` ``R`` ``T`` ``E``: the field, component, repetition, subcomponent and escape characters;
- ``H`` and ``N`` (highlighting on/off): ``_``, as python-hl7 renders them;
- ``.br``, ``.sp``, ``.ce`` → CR; ``.in``, ``.ti`` → four blanks; ``.sk`` → one blank; ``.fi``, ``.nf`` →
  nothing; the same followed by a number repeats it that many times (``.sp2``: two CRs). A number that is
  not an integer raises :class:`ValueError`, as python-hl7 does, and so does one over :data:`MAX_REPEAT`
  (checked before either implementation multiplies anything);
- ``Xhhhh``: one character per pair of hexadecimal digits (up to the first pair that is not hexadecimal);
- anything else (``C``/``M`` character-set switches, ``Z`` local sequences, an empty ``\\\\``, a sequence
  without its closing escape character) is dropped.
"""
from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

#: The python-hl7 minor release whose internals this module was written against (pyproject.toml pins it).
WRITTEN_FOR = (0, 4)

#: ``unescape(text, separators)``: ``separators`` in MSH-1 + MSH-2 order (field, component, repetition,
#: escape, subcomponent), as :class:`~adapters.hl7.segments.Segment` keeps them.
Unescape = Callable[[str, str], str]

_FORMATTING = {".br": "\r", ".sp": "\r", ".ce": "\r", ".in": "    ", ".ti": "    ", ".sk": " ", ".fi": "", ".nf": ""}

#: The largest repeat count of a formatting sequence read (``\.sp3\``: three line breaks). The count multiplies
#: text: ``\.sp999999999\`` in nine bytes would otherwise ask for a gigabyte.
MAX_REPEAT = 99


def installed_version() -> str | None:
    """The installed python-hl7's version string, or None when it is not installed."""
    try:
        return importlib.metadata.version("hl7")
    except importlib.metadata.PackageNotFoundError:
        return None


def _minor(version: str | None) -> tuple[int, int] | None:
    if version is None:
        return None
    parts = version.split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def unescape_fallback(text: str, separators: str) -> str:
    """HL7 v2 escape sequences undone without python-hl7 (the rules in the module docstring)."""
    field, component, repetition, escape, subcomponent = separators
    if not text or escape not in text:
        return text
    named = {"H": "_", "N": "_", "F": field, "S": component, "R": repetition, "T": subcomponent, "E": escape,
             **_FORMATTING}
    out: list[str] = []
    position = 0
    while True:
        start = text.find(escape, position)
        if start < 0:
            out.append(text[position:])
            break
        out.append(text[position:start])
        end = text.find(escape, start + 1)
        if end < 0:  # an escape sequence that never ends: dropped
            break
        out.append(_sequence(text[start + 1:end], named))
        position = end + 1
    return "".join(out)


def _sequence(value: str, named: dict[str, str]) -> str:
    if not value:
        return ""
    if value in named:
        return named[value]
    if value[0] == "." and value[:3] in named:  # a formatting command with a repeat count
        return named[value[:3]] * int(value[3:])
    if value[0] == "X":
        digits = value[1:]
        chars: list[str] = []
        for offset in range(0, len(digits), 2):
            try:
                chars.append(chr(int(digits[offset:offset + 2], 16)))
            except ValueError:
                break
        return "".join(chars)
    return ""


class _Escapes:
    """The two attributes python-hl7's ``unescape`` reads from a container: the escape character and the
    separators in python-hl7's order (segment, field, repetition, component, subcomponent)."""

    __slots__ = ("esc", "separators")

    def __init__(self, esc: str, separators: str) -> None:
        self.esc = esc
        self.separators = separators


@functools.lru_cache(maxsize=64)
def _stand_in(separators: str) -> _Escapes:
    field, component, repetition, escape, subcomponent = separators
    return _Escapes(escape, "\r" + field + repetition + component + subcomponent)


def choose_unescape(version: str | None) -> Unescape:
    """python-hl7's ``unescape`` when ``version`` is of the :data:`WRITTEN_FOR` line; else the fallback,
    with one warning."""
    if _minor(version) == WRITTEN_FOR:
        from hl7 import util as python_hl7_util

        def unescape_with_python_hl7(text: str, separators: str) -> str:
            return python_hl7_util.unescape(_stand_in(separators), text)

        return unescape_with_python_hl7
    log.warning("python-hl7 %s is installed, this adapter was written for %d.%d: its escape-sequence "
                "handling stands down to the adapter's own implementation", version or "(none)", *WRITTEN_FOR)
    return unescape_fallback


def bounded(implementation: Unescape) -> Unescape:
    """``implementation`` preceded by the :data:`MAX_REPEAT` check of every formatting sequence's count."""

    def unescape(text: str, separators: str) -> str:
        parts = text.split(separators[3])
        for sequence in parts[1:len(parts) - 1:2]:  # between an opening and a closing escape character
            count = sequence[3:].strip()
            if sequence[:3] in _FORMATTING and count.lstrip("+-").isdecimal() and int(count) > MAX_REPEAT:
                raise ValueError(f"repeat count {count} of the escape sequence {sequence[:3]} is over {MAX_REPEAT}")
        return implementation(text, separators)

    return unescape


#: The implementation in use, chosen once at import.
unescape: Unescape = bounded(choose_unescape(installed_version()))

"""HL7 v2 encoding rules: a message cut into segments and fields, a field into repetitions → components →
subcomponents, read lazily.

The split is done here, on decoded text, by the rules python-hl7's parser follows (a test checks that every
field of the sample messages reads the same both ways). python-hl7 builds a container object for every
element of a message up front, which costs more than the rest of the receiver's own work together; this
module cuts a message into segments and fields once and splits a field only when it is first read (the
receiver reads a fraction of them). Working on text, not bytes, a GBK trail byte equal to ``|`` can never
split a field.
"""
from __future__ import annotations

from dataclasses import dataclass

from adapters.hl7 import python_hl7_compat
from adapters.hl7.exceptions import Hl7Error

#: MSH-2's characters when a message leaves some out: component, repetition, escape, subcomponent.
DEFAULT_ENCODING_CHARACTERS = "^~\\&"


class Segment:
    """One segment with its occurrence number, for HL7-style locations (``OBX^3^5``).

    ``fields`` follows python-hl7's numbering: ``fields[0]`` is the segment name and ``fields[n]`` field n;
    for MSH, ``fields[1]`` is the field separator (MSH-1) and ``fields[2]`` the encoding characters (MSH-2).
    A field is split into repetitions → components → subcomponents and unescaped only when it is first
    read, then kept: the receiver reads a fraction of the fields, several of them more than once.
    """

    __slots__ = ("fields", "name", "seq", "separators", "_reps")

    def __init__(self, fields: list[str], seq: int, separators: str) -> None:
        self.fields = fields
        self.name = fields[0]
        self.seq = seq
        self.separators = separators  # field, component, repetition, escape, subcomponent (MSH-1 + MSH-2 order)
        self._reps: dict[int, list[list[list[str]]]] = {}

    def loc(self, *path: int) -> str:
        """This segment's location, or that of a field (and repetition) in it: ``OBX^3``, ``PID^1^3^2``."""
        where = f"{self.name}^{self.seq}"
        return where + "".join(f"^{p}" for p in path) if path else where

    def raw(self, n: int) -> str:
        """Field ``n`` exactly as sent (escaped), for echoing into the ACK."""
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[list[list[str]]]:
        """Field ``n`` as repetitions → components → subcomponents, unescaped ([] when absent). Shared: read only.
        Hl7Error (102) when an escape sequence cannot be undone (a repeat count that is no number or too large).

        The same tree python-hl7 builds (HL7 v2 encoding rules: ``~`` between repetitions, ``^`` between
        components, ``&`` between subcomponents, in the message's own MSH-2 characters); escape sequences are
        undone after splitting, so an escaped separator never splits anything.
        """
        cached = self._reps.get(n)
        if cached is not None:
            return cached
        if n >= len(self.fields):
            out: list[list[list[str]]] = []
        else:
            _, comp, rep, esc, sub = self.separators
            value = self.fields[n]
            if esc not in value or esc.isspace():  # nothing to unescape (the common case): split only
                if comp not in value and rep not in value and sub not in value:
                    out = [[[value]]]
                else:
                    out = [[c.split(sub) for c in r.split(comp)] for r in value.split(rep)]
            else:
                try:
                    out = [[[self._text(s) for s in c.split(sub)] for c in r.split(comp)] for r in value.split(rep)]
                except ValueError as exc:  # a formatting sequence's repeat count: not a number, or too large
                    raise Hl7Error(f"bad escape sequence: {exc}", self.loc(n), "102") from None
        self._reps[n] = out
        return out

    def _text(self, value: str) -> str:
        if self.separators[3] not in value:  # no escape sequence, hence no \.br\ either
            return value
        text = python_hl7_compat.unescape(value, self.separators)
        return text.replace("\r", "\n") if "\r" in text else text

    def get(self, n: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
        """One subcomponent of field ``n``, unescaped and stripped; "" when absent."""
        reps = self._reps.get(n) or self.reps(n)
        try:
            return reps[rep - 1][comp - 1][sub - 1].strip()
        except IndexError:
            return ""

    def components(self, n: int, rep: int = 1) -> list[str]:
        """The components of one repetition of field ``n`` (first subcomponent of each), stripped."""
        reps = self._reps.get(n) or self.reps(n)
        if len(reps) < rep:
            return []
        return [c[0].strip() if c else "" for c in reps[rep - 1]]


def split_segments(text: str) -> list[Segment]:
    """Cut a message (CR-separated, starting with MSH and its field separator) into segments and fields.

    HL7 v2 encoding rules: segments end with CR; fields are separated by MSH-1; MSH-2 holds the component,
    repetition, escape and subcomponent characters (defaults ``^~\\&`` for missing ones). MSH (and a stray
    BHS/FHS) is numbered as python-hl7 numbers it: MSH-1 is the separator itself. A blank in the escape
    character's place (``^~ &``) declares no escape character: text is read as sent, never cut into
    "escape sequences" at every blank.
    """
    f = text[3]
    end = text.find("\r")
    first = text if end < 0 else text[:end]
    enc_end = first.find(f, 4)
    enc = first[4:] if enc_end < 0 else first[4:enc_end]
    separators = f + (enc + DEFAULT_ENCODING_CHARACTERS[len(enc):] if len(enc) < 4 else enc[:4])
    counts: dict[str, int] = {}
    segments: list[Segment] = []
    for line in text.split("\r"):
        fields = line.split(f)
        name = fields[0]
        if name in ("MSH", "BHS", "FHS"):
            fields.insert(1, f)
        counts[name] = seq = counts.get(name, 0) + 1
        segments.append(Segment(fields, seq, separators))
    return segments


@dataclass(frozen=True)
class ParsedMessage:
    """One message cut into segments (:func:`split_segments`) and the normalized text they were cut from."""

    text: str  # segments separated by single CRs, no trailing CR or whitespace
    segments: list[Segment]

    @property
    def msh(self) -> Segment:
        return self.segments[0]

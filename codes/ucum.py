"""A small UCUM (Unified Code for Units of Measure) syntax validator.

Implements the case-sensitive UCUM grammar — ``term := component (('.'|'/') component)*``,
components being a prefixed/unprefixed atom with an optional integer exponent, an integer factor,
an annotation ``{...}`` or a parenthesised term, and a leading ``/`` allowed — over the atoms a
clinical lab needs. Only metric atoms take prefixes (so ``m[IU]`` parses but ``m%`` does not).
Common non-UCUM spellings are rejected on purpose: ``mIU/mL`` is ``m[IU]/mL``, ``µmol/L`` is
``umol/L``, ``mmHg`` is ``mm[Hg]``, ``10^9/L`` is ``10*9/L``.
"""

from __future__ import annotations

import re

PREFIXES: tuple[str, ...] = (
    "da", "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "d", "c", "m", "u", "n", "p", "f", "a", "z", "y",
)

# Metric atoms (may take a prefix).
METRIC_ATOMS: frozenset[str] = frozenset({
    "m", "s", "g", "rad", "K", "C", "cd", "mol", "sr", "Hz", "N", "Pa", "J", "W", "A", "V", "F", "Ohm", "S",
    "Wb", "Cel", "T", "H", "lm", "lx", "Bq", "Gy", "Sv", "l", "L", "ar", "t", "bar", "u", "eV", "pc", "gf",
    "Ky", "Gal", "dyn", "erg", "P", "St", "Mx", "G", "Oe", "Gb", "sb", "Lmb", "ph", "Ci", "R", "RAD", "REM",
    "cal", "eq", "osm", "kat", "U", "[IU]", "[iU]", "m[Hg]", "m[H2O]", "B", "Np", "mho", "bit", "By", "Bd",
    "[g]", "[c]", "[h]", "[k]", "[e]", "[G]",
})
# Non-metric atoms (no prefix).
NONMETRIC_ATOMS: frozenset[str] = frozenset({
    "min", "h", "d", "wk", "mo", "a", "a_j", "a_g", "mo_j", "mo_g", "'", "''", "deg", "%", "[ppth]", "[ppm]",
    "[ppb]", "[pptr]", "10*", "10^", "[pi]", "[pH]", "[HPF]", "[LPF]", "[arb'U]", "[USP'U]", "[GPL'U]",
    "[MPL'U]", "[APL'U]", "[CFU]", "[PFU]", "[FFU]", "[BAU]", "[AU]", "[Lf]", "[drp]", "[in_i]", "[ft_i]",
    "[lb_av]", "[oz_av]", "[mi_i]", "[degF]", "[S]", "[mesh_i]", "[hp_X]", "[hp_C]", "[kp_X]", "[kp_C]",
    "[tb'U]", "[todd'U]", "[dye'U]", "[smgy'U]", "[bdsk'U]", "[ka'U]", "[knk'U]", "[mclg'U]", "[beth'U]",
    "[D'ag'U]", "[EU]", "[ELU]", "[Amb'a'1'U]", "[TCID_50]", "[CCID_50]", "[anti'Xa'U]",
})

_EXPONENT_RE = re.compile(r"[+-]?\d+$")
_ANNOTATION_RE = re.compile(r"\{[!-z|~]*\}")  # printable ASCII except curly braces


class UcumError(ValueError):
    """The string is not a valid UCUM unit expression."""


def _simple_unit_ok(text: str) -> bool:
    if text in METRIC_ATOMS or text in NONMETRIC_ATOMS:
        return True
    for prefix in PREFIXES:
        if text.startswith(prefix) and text[len(prefix):] in METRIC_ATOMS:
            return True
    return False


def _annotatable_ok(token: str) -> bool:
    """An atom with optional prefix and optional signed integer exponent (``m2``, ``10*9``)."""
    if _simple_unit_ok(token):
        return True
    # Try every split into unit + exponent: "10*9" is the atom "10*" with exponent 9.
    for k in range(1, len(token)):
        if _EXPONENT_RE.fullmatch(token[k:]) and _simple_unit_ok(token[:k]):
            return True
    return False


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def error(self, msg: str) -> UcumError:
        return UcumError(f"{msg} at position {self.i} in {self.s!r}")

    def parse(self) -> None:
        if not self.s:
            raise UcumError("empty unit")
        if self.s[0] == "/":
            self.i = 1
        self.term()
        if self.i != len(self.s):
            raise self.error("unexpected character")

    def term(self) -> None:
        self.component()
        while self.i < len(self.s) and self.s[self.i] in "./":
            self.i += 1
            self.component()

    def component(self) -> None:
        s = self.s
        if self.i >= len(s):
            raise self.error("missing unit")
        ch = s[self.i]
        if ch == "(":
            self.i += 1
            self.term()
            if self.i >= len(s) or s[self.i] != ")":
                raise self.error("unclosed parenthesis")
            self.i += 1
            return
        if ch == "{":
            self.annotation()
            return
        start = self.i
        depth = 0
        # A token runs to the next operator/parenthesis/annotation; square brackets may contain dots.
        while self.i < len(s):
            c = s[self.i]
            if c == "[":
                depth += 1
            elif c == "]":
                depth -= 1
            elif depth == 0 and c in "./(){":
                break
            self.i += 1
        token = s[start:self.i]
        if not token:
            raise self.error("missing unit")
        if not token.isdigit() and not _annotatable_ok(token):
            raise UcumError(f"unknown unit {token!r} in {self.s!r}")
        if self.i < len(s) and s[self.i] == "{":
            self.annotation()

    def annotation(self) -> None:
        m = _ANNOTATION_RE.match(self.s, self.i)
        if not m:
            raise self.error("bad annotation")
        self.i = m.end()


def validate_ucum(unit: str) -> None:
    """Raise :class:`UcumError` unless ``unit`` is a valid UCUM expression (case-sensitive)."""
    if any(ord(c) < 33 or ord(c) > 126 for c in unit):
        raise UcumError(f"UCUM units are printable ASCII without spaces: {unit!r}")
    _Parser(unit).parse()


def is_valid_ucum(unit: str) -> bool:
    """True when ``unit`` parses as UCUM."""
    try:
        validate_ucum(unit)
    except UcumError:
        return False
    return True

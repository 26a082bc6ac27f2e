"""LOINC code syntax and check digit.

A LOINC code is ``NNNNN-C``: 1-7 digits, a hyphen and one check digit computed with the mod-10
algorithm the LOINC users' guide specifies (take the digits in odd positions counted from the right,
read them as a number and double it; prefix the digits in even positions; sum all digits of that
string; the check digit is what brings the sum up to the next multiple of ten).
"""

from __future__ import annotations

import re

_LOINC_RE = re.compile(r"^(\d{1,7})-(\d)$")

#: Every name under which senders write the LOINC code system: FHIR's URI, HL7 v2 table 0396's "LN", the
#: HL7 OID, and the spellings found in hospitals' own tables. Matched case-insensitively.
LOINC_SYSTEMS: frozenset[str] = frozenset({"http://loinc.org", "LN", "LOINC", "urn:oid:2.16.840.1.113883.6.1"})
_LOINC_FOLDED = frozenset(s.casefold() for s in LOINC_SYSTEMS)


def is_loinc_system(system: str | None) -> bool:
    """Whether ``system`` names the LOINC code system (any accepted spelling, any case, blanks ignored)."""
    return system is not None and system.strip().casefold() in _LOINC_FOLDED


def loinc_check_digit(body: str) -> int:
    """Check digit for the part of a LOINC code before the hyphen (``"14749"`` -> 6)."""
    if not body.isdigit():
        raise ValueError(f"LOINC body must be digits: {body!r}")
    rev = body[::-1]
    # Positions counted from the right, 1-based: odd positions are rev[0], rev[2], ...
    odd = rev[0::2][::-1]
    even = rev[1::2][::-1]
    doubled = str(int(odd) * 2)
    total = sum(int(ch) for ch in even + doubled)
    return (10 - total % 10) % 10


def is_valid_loinc(code: str) -> bool:
    """True when ``code`` is well-formed and its check digit is right."""
    m = _LOINC_RE.match(code or "")
    return bool(m) and loinc_check_digit(m.group(1)) == int(m.group(2))


def loinc_problem(code: str) -> str | None:
    """A human-readable reason why ``code`` is not a valid LOINC code, or None."""
    m = _LOINC_RE.match(code or "")
    if not m:
        return f"LOINC code {code!r} is not of the form NNNNN-C"
    expected = loinc_check_digit(m.group(1))
    if expected != int(m.group(2)):
        return f"LOINC code {code!r} fails its check digit (expected {m.group(1)}-{expected})"
    return None

"""Resident identity numbers (居民身份证号码): validation, normalization and scrubbing from free text.

GB 11643-1999: 18 characters — a 6-digit administrative division code, an 8-digit birth date, a 3-digit
sequence and a check character computed with ISO 7064 MOD 11-2. The number itself never travels in an
event: adapters replace it with a keyed pseudonym, and every dead letter or log line is scrubbed of
anything shaped like one (docs/rules.md, "Privacy").
"""
from __future__ import annotations

import re
import unicodedata
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SHAPE = re.compile(r"^\d{17}[\dX]$")
#: A run of digits long enough to hold a resident ID, with the check character X (any width, any case) that
#: may end it: what :func:`scrub` examines. ``\d`` is any Unicode decimal digit (full-width too).
RESIDENT_ID_PATTERN = re.compile(r"\d{17,}[XxＸｘ]?")
_X = frozenset("XxＸｘ")
#: Birth years a resident ID still in use carries: in a longer run of digits, a window is taken for an ID only
#: with such a year (besides a valid date and check character), so that long numbers are rarely taken for one.
_BIRTH_YEARS = range(1900, 2100)


class InvalidResidentId(ValueError):
    """The text is not a valid 18-character resident identity number."""


def check_character(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of the first 17 digits (GB 11643-1999 §5.3)."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def normalize_resident_id(text: str) -> str:
    """Return the canonical form (half-width, upper-case X, no blanks) or raise InvalidResidentId.

    The error message never repeats the number itself, so it is safe to log or return to a caller.
    """
    if not isinstance(text, str):
        raise InvalidResidentId("resident ID must be a string")
    value = unicodedata.normalize("NFKC", text).strip().replace(" ", "").upper()
    if len(value) != 18:
        raise InvalidResidentId(f"resident ID must have 18 characters, got {len(value)}")
    if not _SHAPE.match(value):
        raise InvalidResidentId("resident ID must be 17 digits followed by a digit or X")
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise InvalidResidentId("resident ID carries an impossible birth date (characters 7-14)") from None
    if check_character(value[:17]) != value[17]:
        raise InvalidResidentId("resident ID check character (GB 11643 MOD 11-2) does not match")
    return value


def make_resident_id(first17: str) -> str:
    """Complete 17 digits with their check character (for demo and test data)."""
    return first17 + check_character(first17)


#: What :func:`scrub` puts where a resident ID was.
PLACEHOLDER = "[resident-id]"


def _holds_resident_id(run: str) -> bool:
    """Whether an 18-character window of a longer digit run is a resident ID: a birth date in
    :data:`_BIRTH_YEARS` at characters 7–14 and the matching check character (GB 11643-1999 §5.3)."""
    for start in range(len(run) - 17):
        window = run[start:start + 18]  # only the run's last character can be an X
        digits = [int(c) for c in window[:17]]  # int() reads any Unicode decimal digit
        year = digits[6] * 1000 + digits[7] * 100 + digits[8] * 10 + digits[9]
        if year not in _BIRTH_YEARS:
            continue
        try:
            date(year, digits[10] * 10 + digits[11], digits[12] * 10 + digits[13])
        except ValueError:
            continue
        last = window[17]
        actual = "X" if last in _X else str(int(last))
        if actual == _CHECK[sum(d * w for d, w in zip(digits, _WEIGHTS, strict=True)) % 11]:
            return True
    return False


def _scrub_run(match: re.Match[str]) -> str:
    run = match.group()
    if len(run) == 18 or _holds_resident_id(run):
        return PLACEHOLDER
    return run


def scrub(text: str) -> str:
    """Replace every resident ID in ``text`` with :data:`PLACEHOLDER`, wherever it stands (docs/rules.md,
    "Privacy").

    A run of exactly 17 digits and a check digit or X has a resident ID's shape and is replaced whatever its
    check character and whatever letters surround it (``…NNCHN``, ``ID…``): an ID mistyped by one digit is
    still personal data. A longer run of digits (an ID glued to other digits) is replaced as a whole when
    any 18 characters of it form a resident ID with a plausible birth date and the right check character.
    Shorter runs are left alone.
    """
    return RESIDENT_ID_PATTERN.sub(_scrub_run, text)

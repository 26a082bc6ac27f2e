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
#: Anything that looks like a resident ID inside free text (used to scrub dead letters and logs).
RESIDENT_ID_PATTERN = re.compile(r"(?<!\d)\d{17}[\dXx](?![\dA-Za-z])")


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


def scrub(text: str) -> str:
    """Replace anything shaped like a resident ID with a placeholder."""
    return RESIDENT_ID_PATTERN.sub("[resident-id]", text)

"""Resident identity numbers (居民身份证号码) and the keyed pseudonym that replaces them.

GB 11643-1999: 18 characters — a 6-digit administrative division code, an 8-digit birth date, a 3-digit
sequence and a check character computed with ISO 7064 MOD 11-2. An unkeyed hash of such a number is
reversible by enumeration (about 1.3e11 candidates), so the pseudonym is an HMAC whose key lives outside
the database and the broker (PIPL §28–29; DOMAIN.md §9). Raw numbers never leave this module's callers.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import date
from pathlib import Path

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SHAPE = re.compile(r"^\d{17}[\dX]$")
#: Anything that looks like a resident ID inside free text (used to scrub dead letters and logs).
RESIDENT_ID_PATTERN = re.compile(r"(?<!\d)\d{17}[\dXx](?![\dA-Za-z])")
_HMAC_DIGEST = "sm3" if "sm3" in hashlib.algorithms_available else "sha256"


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


@dataclass(frozen=True)
class Pseudonymizer:
    """Keyed HMAC (SM3 where OpenSSL provides it, else SHA-256) of the normalized resident ID."""

    key: bytes
    algorithm: str = _HMAC_DIGEST

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("pseudonym key must be at least 16 bytes")

    @property
    def key_id(self) -> str:
        """Short public fingerprint of the key, so events made under another key can be told apart."""
        return hashlib.sha256(b"hrx-key-id:" + self.key).hexdigest()[:8]

    def pseudonym(self, resident_id: str) -> str:
        normalized = normalize_resident_id(resident_id)
        return hmac.new(self.key, normalized.encode("ascii"), self.algorithm).hexdigest()

    @classmethod
    def from_settings(cls, key: bytes | None, key_file: Path | None, var_dir: Path) -> Pseudonymizer:
        """Use the configured key or key file; with neither, create (once) ``var_dir/pseudonym.key``."""
        if key:
            return cls(key)
        path = key_file or var_dir / "pseudonym.key"
        if not path.exists():
            if key_file:
                raise FileNotFoundError(f"pseudonym key file {path} does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process of the exchange created it first
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
                    fh.flush()
                    os.fsync(fh.fileno())
        return cls(path.read_text().strip().encode())

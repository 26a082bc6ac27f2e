"""The pseudonymize step: a keyed pseudonym replaces the resident identity number.

An unkeyed hash of an 18-character resident ID is reversible by enumeration (about 1.3e11 candidates), so
the pseudonym is an HMAC whose key lives outside the database and the broker (PIPL §28–29; docs/rules.md,
"Privacy"). Raw numbers never leave this module's callers.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from schemas.resident_id import (  # noqa: F401 - callers meet these with the pseudonymizer
    InvalidResidentId,
    normalize_resident_id,
)

_HMAC_DIGEST = "sm3" if "sm3" in hashlib.algorithms_available else "sha256"


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

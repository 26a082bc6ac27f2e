"""The pseudonymize step: a keyed pseudonym replaces the resident identity number.

An unkeyed hash of an 18-character resident ID is reversible by enumeration (about 1.3e11 candidates), so
the pseudonym is an HMAC whose key lives outside the database and the broker (PIPL §28–29; docs/rules.md,
"Privacy"). Raw numbers never leave this module's callers.

Every site that must match patients needs the same key *and* the same algorithm, so the algorithm is part of
the key id that events carry (``sm3-…``, ``sha256-…``), the configured algorithm is computed or refused, never
replaced by another, and a key is created only on purpose (:func:`create_key_file`), never as a side effect of
starting a process.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from adapters.private_files import PRIVATE_FILE_MODE, make_private_dir
from schemas.resident_id import normalize_resident_id

#: The HMAC hash functions a pseudonym may be made with. SM3 (GB/T 32905-2016) is the national standard's.
ALGORITHMS = ("sm3", "sha256")
DEFAULT_ALGORITHM = "sm3"
#: Name of the key file in the var directory when no ``HRX_PSEUDONYM_KEY_FILE`` is configured.
KEY_FILE_NAME = "pseudonym.key"
MIN_KEY_BYTES = 16
#: SM3's message block: HMAC-SM3 (RFC 2104 with SM3) pads the key to this length.
SM3_BLOCK_BYTES = 64
_KEY_ID_MESSAGE = b"hrx-pseudonym-key-id"


class PseudonymKeyMissing(FileNotFoundError):
    """No pseudonym key where the settings point: a process refuses to start rather than make another key."""


class AlgorithmUnavailable(ValueError):
    """The configured HMAC algorithm is unknown or cannot be computed here (never replaced by another)."""


def sm3_provider() -> str:
    """Where SM3 comes from: ``"openssl"`` when this Python's OpenSSL has it, else ``"gmssl"`` (pure Python).

    Raises AlgorithmUnavailable when neither provides it.
    """
    if "sm3" in hashlib.algorithms_available:
        return "openssl"
    try:
        from gmssl import sm3  # noqa: F401
    except ImportError:
        raise AlgorithmUnavailable(
            "HMAC-SM3 is configured but this Python's OpenSSL has no SM3 and the gmssl package is not installed "
            "(pip install gmssl); the exchange does not fall back to another algorithm") from None
    return "gmssl"


def sm3_digest(message: bytes, provider: str | None = None) -> bytes:
    """SM3 hash of ``message`` (GB/T 32905-2016), from OpenSSL or from gmssl."""
    if (provider or sm3_provider()) == "openssl":
        return hashlib.new("sm3", message).digest()
    from gmssl import sm3

    return bytes.fromhex(sm3.sm3_hash(list(message)))  # sm3_hash pads the list it is given: a fresh one


def _hmac_sm3_pure(key: bytes, message: bytes) -> bytes:
    """HMAC-SM3 per RFC 2104 with gmssl's SM3: H((K ⊕ opad) ‖ H((K ⊕ ipad) ‖ m)), 64-byte block."""
    if len(key) > SM3_BLOCK_BYTES:
        key = sm3_digest(key, "gmssl")
    key = key.ljust(SM3_BLOCK_BYTES, b"\0")
    inner = sm3_digest(bytes(b ^ 0x36 for b in key) + message, "gmssl")
    return sm3_digest(bytes(b ^ 0x5C for b in key) + inner, "gmssl")


def resolve_provider(algorithm: str, provider: str | None = None) -> str:
    """The implementation that computes ``algorithm``: the one asked for, else OpenSSL where it has it.

    Raises AlgorithmUnavailable for an unknown algorithm or a provider that cannot compute it.
    """
    if algorithm not in ALGORITHMS:
        raise AlgorithmUnavailable(f"unknown pseudonym algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    if provider is None:
        return sm3_provider() if algorithm == "sm3" else "openssl"
    if provider == "openssl":
        if algorithm not in hashlib.algorithms_available:
            raise AlgorithmUnavailable(f"this Python's OpenSSL has no {algorithm}")
        return provider
    if provider == "gmssl":
        if algorithm != "sm3":
            raise AlgorithmUnavailable("gmssl provides SM3 only")
        try:
            from gmssl import sm3  # noqa: F401
        except ImportError:
            raise AlgorithmUnavailable("the gmssl package is not installed") from None
        return provider
    raise AlgorithmUnavailable(f"unknown SM3 provider {provider!r}: openssl or gmssl")


def keyed_digest(algorithm: str, provider: str, key: bytes, message: bytes) -> bytes:
    """HMAC of ``message`` under ``key`` with ``algorithm`` as computed by ``provider`` (RFC 2104)."""
    if provider == "gmssl":
        return _hmac_sm3_pure(key, message)
    return hmac.digest(key, message, algorithm)


@dataclass(frozen=True)
class Pseudonymizer:
    """Keyed HMAC of the normalized resident ID, with SM3 (default) or SHA-256; never one for the other."""

    key: bytes = field(repr=False)
    algorithm: str = DEFAULT_ALGORITHM
    #: ``"openssl"`` or ``"gmssl"``; None picks OpenSSL where it has the algorithm. Both give the same HMACs.
    provider: str | None = None

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"pseudonym key must be at least {MIN_KEY_BYTES} bytes")
        object.__setattr__(self, "provider", resolve_provider(self.algorithm, self.provider))

    @property
    def key_id(self) -> str:
        """Public id of the key *and* algorithm: ``<algorithm>-<16 hex digits>``.

        The digits are an HMAC of a fixed text under the key with the algorithm itself, so the same key under
        SM3 and under SHA-256 has two ids, and events made under another key or algorithm can be told apart.
        """
        mac = keyed_digest(self.algorithm, self.provider or "", self.key, _KEY_ID_MESSAGE)
        return f"{self.algorithm}-{mac.hex()[:16]}"

    def pseudonym(self, resident_id: str) -> str:
        normalized = normalize_resident_id(resident_id)
        return keyed_digest(self.algorithm, self.provider or "", self.key, normalized.encode("ascii")).hex()

    @classmethod
    def from_settings(cls, key: bytes | None, key_file: Path | None, var_dir: Path,
                      algorithm: str = DEFAULT_ALGORITHM) -> Pseudonymizer:
        """The configured key (inline, or the key file, else ``var_dir/pseudonym.key``); creates nothing.

        Raises PseudonymKeyMissing when the file is absent: a second key would give the same patient another
        pseudonym, and nothing found by resident ID would ever match what that process published.
        """
        if key:
            return cls(key, algorithm)
        path = key_file_path(key_file, var_dir)
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            named = "HRX_PSEUDONYM_KEY_FILE" if key_file else f"the key file of HRX_VAR_DIR={var_dir}"
            raise PseudonymKeyMissing(
                f"no pseudonym key: {path} does not exist ({named}). Every process of an exchange must use "
                "the exchange's one key: set HRX_PSEUDONYM_KEY_FILE to its key file, or HRX_VAR_DIR to the var "
                "directory of `hrx up`. Only for a new exchange, create one with `hrx keys init`.") from None
        if not text:
            raise PseudonymKeyMissing(f"pseudonym key file {path} is empty")
        return cls(text.encode(), algorithm)


def key_file_path(key_file: Path | None, var_dir: Path) -> Path:
    """The key file the settings name: ``key_file``, else ``var_dir/pseudonym.key``."""
    return key_file or var_dir / KEY_FILE_NAME


def create_key_file(path: Path) -> bytes:
    """Write a new random key (32 bytes, hex) to ``path`` with mode 0600 (a directory it creates: 0700),
    fsynced with its directory entry (adapters.private_files).

    Raises FileExistsError when the file exists: replacing a key changes every pseudonym made from then on.
    """
    make_private_dir(path.parent)
    key = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the file's name must survive a crash as well as its content
    finally:
        os.close(directory)
    return key

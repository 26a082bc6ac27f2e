"""The pseudonymize step (adapters/pseudonymize.py): keyed HMAC-SM3, the key id, key files that only an explicit
step creates, and SM3 from OpenSSL or gmssl with identical results — never another algorithm instead."""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.pseudonymize import (
    AlgorithmUnavailable,
    Pseudonymizer,
    PseudonymKeyMissing,
    create_key_file,
    keyed_digest,
    sm3_digest,
)
from schemas.resident_id import InvalidResidentId

# GB 11643 example number from the standard's own worked example.
STANDARD_EXAMPLE = "11010519491231002X"
KEY = b"hrx-pseudonymize-test-key-0123456789"
#: GB/T 32905-2016, appendix A: example 1 ("abc") and example 2 ("abcd" × 16, one full 64-byte block).
SM3_VECTORS = [
    (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
    (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
]
OPENSSL_SM3 = "sm3" in hashlib.algorithms_available
needs_openssl_sm3 = pytest.mark.skipif(not OPENSSL_SM3, reason="this Python's OpenSSL has no SM3")


@pytest.mark.parametrize("message, expected", SM3_VECTORS)
def test_gmssl_sm3_gives_the_standard_vectors(message: bytes, expected: str) -> None:
    assert sm3_digest(message, "gmssl").hex() == expected


@needs_openssl_sm3
@pytest.mark.parametrize("message, expected", SM3_VECTORS)
def test_openssl_sm3_gives_the_standard_vectors(message: bytes, expected: str) -> None:
    assert sm3_digest(message, "openssl").hex() == expected


@needs_openssl_sm3
@pytest.mark.parametrize("key", [KEY[:16], KEY, b"k" * 64, b"k" * 65, bytes(range(100))])
@pytest.mark.parametrize("message", [b"", b"abc", STANDARD_EXAMPLE.encode(), b"abcd" * 16, b"x" * 200])
def test_hmac_sm3_is_the_same_from_openssl_gmssl_and_the_standard_library(key: bytes, message: bytes) -> None:
    """RFC 2104 with SM3's 64-byte block: keys longer than a block are hashed first, shorter ones padded."""
    by_openssl = keyed_digest("sm3", "openssl", key, message)
    by_gmssl = keyed_digest("sm3", "gmssl", key, message)
    by_stdlib = hmac.new(key, message, lambda *data: hashlib.new("sm3", *data)).digest()  # Python's RFC 2104
    assert by_openssl == by_gmssl == by_stdlib


@needs_openssl_sm3
def test_pseudonyms_and_key_ids_do_not_depend_on_the_provider() -> None:
    openssl, gmssl = Pseudonymizer(KEY, provider="openssl"), Pseudonymizer(KEY, provider="gmssl")
    assert openssl.pseudonym(STANDARD_EXAMPLE) == gmssl.pseudonym(STANDARD_EXAMPLE)
    assert openssl.key_id == gmssl.key_id
    assert Pseudonymizer(KEY).provider == "openssl"  # OpenSSL's, where it has SM3


def _in_python_without_openssl_sm3(code: str, *, block_gmssl: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python whose hashlib does not offer SM3 (as on a distribution's OpenSSL without it)."""
    prelude = ("import hashlib, sys\n"
               "hashlib.algorithms_available = frozenset(hashlib.algorithms_available - {'sm3'})\n"
               + ("sys.modules['gmssl'] = None\n" if block_gmssl else ""))
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])


@needs_openssl_sm3
@pytest.mark.integration  # a fresh interpreter without OpenSSL SM3
def test_without_sm3_in_openssl_the_pseudonym_is_still_hmac_sm3() -> None:
    """The same key gives the same pseudonym and key id on a host whose OpenSSL lacks SM3."""
    run = _in_python_without_openssl_sm3(
        "from adapters.pseudonymize import Pseudonymizer\n"
        f"p = Pseudonymizer({KEY!r})\n"
        f"print(p.pseudonym({STANDARD_EXAMPLE!r}), p.key_id, getattr(p, 'provider', None))\n")
    assert run.returncode == 0, run.stderr
    pseudonym, key_id, provider = run.stdout.split()
    here = Pseudonymizer(KEY)
    assert pseudonym == here.pseudonym(STANDARD_EXAMPLE)  # not HMAC-SHA-256 in its place
    assert (key_id, provider) == (here.key_id, "gmssl")


@pytest.mark.integration  # a fresh interpreter without OpenSSL SM3
def test_sm3_from_nowhere_is_an_error_not_a_fallback() -> None:
    run = _in_python_without_openssl_sm3(
        "from adapters.pseudonymize import AlgorithmUnavailable, Pseudonymizer\n"
        "try:\n"
        f"    Pseudonymizer({KEY!r})\n"
        "except AlgorithmUnavailable as exc:\n"
        "    print('refused:', exc)\n"
        "else:\n"
        "    print('accepted')\n", block_gmssl=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("refused:") and "gmssl" in run.stdout and "fall back" in run.stdout


def test_the_key_id_names_the_algorithm() -> None:
    sm3, sha256 = Pseudonymizer(KEY), Pseudonymizer(KEY, "sha256")
    assert re.fullmatch(r"sm3-[0-9a-f]{16}", sm3.key_id) and re.fullmatch(r"sha256-[0-9a-f]{16}", sha256.key_id)
    assert sm3.key_id.split("-")[1] != sha256.key_id.split("-")[1]  # the fingerprint too, not only the prefix
    assert sm3.pseudonym(STANDARD_EXAMPLE) != sha256.pseudonym(STANDARD_EXAMPLE)
    assert sha256.pseudonym(STANDARD_EXAMPLE) == hmac.new(KEY, STANDARD_EXAMPLE.encode(), "sha256").hexdigest()


@pytest.mark.parametrize("algorithm, provider", [("md5", None), ("sm3", "pycrypto"), ("sha256", "gmssl")])
def test_an_algorithm_that_cannot_be_computed_is_refused(algorithm: str, provider: str | None) -> None:
    with pytest.raises(AlgorithmUnavailable):
        Pseudonymizer(KEY, algorithm, provider)


def test_pseudonym_is_keyed_and_stable() -> None:
    a, b = Pseudonymizer(b"k" * 32), Pseudonymizer(b"j" * 32)
    assert a.pseudonym(STANDARD_EXAMPLE) == a.pseudonym(STANDARD_EXAMPLE.lower())
    assert a.pseudonym(STANDARD_EXAMPLE) != b.pseudonym(STANDARD_EXAMPLE)
    assert len(a.pseudonym(STANDARD_EXAMPLE)) == 64 and a.key_id != b.key_id
    with pytest.raises(InvalidResidentId):
        a.pseudonym("110105194912310021")
    assert "k" * 16 not in repr(a)  # the key stays out of logs and tracebacks


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Pseudonymizer(b"short")


def test_from_settings_creates_no_key(tmp_path: Path) -> None:
    """A process started with another var directory must not make a key of its own."""
    var = tmp_path / "var"
    with pytest.raises(PseudonymKeyMissing) as info:
        Pseudonymizer.from_settings(None, None, var)
    assert not var.exists()
    message = str(info.value)
    assert "HRX_PSEUDONYM_KEY_FILE" in message and "HRX_VAR_DIR" in message and "hrx keys init" in message


def test_missing_configured_key_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="HRX_PSEUDONYM_KEY_FILE"):
        Pseudonymizer.from_settings(None, tmp_path / "absent.key", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_created_key_file_is_private_read_back_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "var" / "pseudonym.key"
    key = create_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Pseudonymizer.from_settings(None, None, tmp_path / "var").key == key
    with pytest.raises(FileExistsError):
        create_key_file(path)
    assert path.read_bytes() == key

"""Secrets and how they are checked: Argon2id password hashes, RFC 6238 TOTP codes, random tokens.

Passwords and client secrets are kept only as Argon2id hashes (argon2-cffi's defaults, RFC 9106's second
recommended parameter set); bearer tokens and session ids, long random strings, are kept as SHA-256 digests
(enough for 256-bit random values, and fast to look up). TOTP secrets must be kept as they are: the server
needs them to compute the expected code.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
MIN_PASSWORD_LENGTH = 10


def hash_secret(secret: str) -> str:
    return _HASHER.hash(secret)


def secret_matches(stored_hash: str, given: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, given)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A bearer token, session id or client secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, account: str) -> str:
    """The otpauth:// URI an authenticator app scans."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name="HR Exchange")


def totp_step(secret: str, code: str | None, after: int | None, at: float | None = None) -> int | None:
    """The RFC 6238 time step (30 s) whose code ``code`` is, within one step of clock drift either way, or None.

    A code is accepted once (RFC 6238 §5.2): a step not later than ``after``, the last step accepted for this
    secret, is refused, so a code seen over a shoulder or replayed within its window does not log in again.
    """
    if not code:
        return None
    totp, now = pyotp.TOTP(secret), time.time() if at is None else at
    current = int(now // totp.interval)
    for step in (current - 1, current, current + 1):
        if (after is None or step > after) and hmac.compare_digest(totp.generate_otp(step), str(code)):
            return step
    return None


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password has at least {MIN_PASSWORD_LENGTH} characters"
    return None

"""The pieces of exchange.auth that need no store: roles and purposes, secrets, the block rule, name masking."""
from __future__ import annotations

from datetime import UTC, datetime

import pyotp
import pytest

from exchange.api.me import mask
from exchange.auth import credentials
from exchange.auth.relationship import Block, is_blocked
from exchange.auth.roles import person_roles, purposes, roles, system_roles


def test_every_role_has_its_purposes_and_operators_never_treat() -> None:
    assert set(roles()) == {"clinician", "his", "source", "operator", "auditor", "patient", "admin"}
    assert "treatment" not in roles()["operator"].purposes and "treatment" not in roles()["auditor"].purposes
    assert roles()["his"].purposes == roles()["clinician"].purposes
    assert {r for r in roles() if roles()[r].second_factor} == {"operator", "auditor", "admin"}
    assert set(person_roles()) == {"clinician", "operator", "auditor", "admin"} and set(system_roles()) == {
        "his", "source"}
    assert purposes()[:3] == ("treatment", "order_check", "emergency")


def test_secrets_are_argon2id_and_tokens_are_kept_as_digests() -> None:
    stored = credentials.hash_secret("a long enough password")
    assert stored.startswith("$argon2id$") and "a long enough password" not in stored
    assert credentials.secret_matches(stored, "a long enough password")
    assert not credentials.secret_matches(stored, "another password")
    assert not credentials.secret_matches("not a hash", "anything")
    token = credentials.new_token()
    assert len(token) >= 43 and credentials.token_digest(token) != token and len(credentials.token_digest(token)) == 64
    assert credentials.password_problem("short") and credentials.password_problem("long enough!") is None


def test_totp_takes_the_current_code_and_one_step_of_drift_once() -> None:
    secret = credentials.new_totp_secret()
    totp = pyotp.TOTP(secret)
    now = 1_800_000_015.0  # 15 s into a step: the steps around it are whole
    step = int(now // 30)
    assert credentials.totp_step(secret, totp.at(now), None, at=now) == step
    assert credentials.totp_step(secret, totp.at(now - 30), None, at=now) == step - 1
    assert credentials.totp_step(secret, totp.at(now + 30), None, at=now) == step + 1
    assert credentials.totp_step(secret, totp.at(now - 120), None, at=now) is None
    assert credentials.totp_step(secret, None, None, at=now) is None and credentials.totp_step(secret, "", None) is None
    # RFC 6238 §5.2: once a step is accepted, its code and every earlier one are refused
    assert credentials.totp_step(secret, totp.at(now), step, at=now) is None
    assert credentials.totp_step(secret, totp.at(now - 30), step, at=now) is None
    assert credentials.totp_step(secret, totp.at(now + 30), step, at=now) == step + 1


AT = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(("blocks", "issuer", "categories", "reader", "blocked"), [
    ([Block(1, "he-sjz-001", None, AT)], "he-sjz-001", {"haematology"}, "bj-chaoyang-001", True),
    ([Block(1, "he-sjz-001", None, AT)], "bj-xicheng-001", {"haematology"}, "bj-chaoyang-001", False),
    ([Block(1, "he-sjz-001", None, AT)], "he-sjz-001", {"haematology"}, "he-sjz-001", False),  # its own
    ([Block(1, None, "molecular", AT)], "bj-xicheng-001", {"molecular", "biochemistry"}, "bj-chaoyang-001", True),
    ([Block(1, None, "molecular", AT)], "bj-xicheng-001", {"biochemistry"}, "bj-chaoyang-001", False),
    ([Block(1, "he-sjz-001", "molecular", AT)], "he-sjz-001", {"biochemistry"}, "bj-chaoyang-001", False),
    ([], "he-sjz-001", {"haematology"}, "bj-chaoyang-001", False),
])
def test_a_block_names_a_hospital_a_category_or_both(blocks, issuer, categories, reader, blocked) -> None:  # type: ignore[no-untyped-def]
    assert is_blocked(blocks, issuer=issuer, categories=categories, reader_institution=reader) is blocked


@pytest.mark.parametrize(("name", "shown"), [("张三", "张*"), ("欧阳娜娜", "欧***"), ("李", "李*"), ("", "*")])
def test_a_clinicians_name_is_masked_for_the_patient(name: str, shown: str) -> None:
    assert mask(name) == shown


def test_the_throttle_forgets_failures_older_than_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange.auth import throttle

    now = [1000.0]
    monkeypatch.setattr(throttle.time, "monotonic", lambda: now[0])
    limiter = throttle.FailureThrottle(limit=3, window=60)
    for _ in range(3):
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60 and limiter.retry_after("10.0.0.2") is None
    now[0] += 61
    assert limiter.retry_after("10.0.0.1") is None

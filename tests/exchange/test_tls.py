"""TLS of the HTTP API (exchange/tls.py, ``hrx serve``/``hrx up --tls-cert/--tls-key``): both files or neither,
each readable and matching, checked before anything starts; ``hrx serve`` then answers over HTTPS only."""
from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from exchange.api.security_headers import HSTS
from exchange.broker import free_port
from exchange.config import Settings
from exchange.tls import uvicorn_tls
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.tls import TlsPair, make_self_signed
from tests.fixtures.waiting import wait_for


def _refusal(cert: Path | None, key: Path | None) -> str:
    with pytest.raises(SystemExit) as refused:
        uvicorn_tls(Settings(tls_cert=cert, tls_key=key))
    return str(refused.value)


def test_without_tls_files_uvicorn_serves_plain_http() -> None:
    assert uvicorn_tls(Settings()) == {}


def test_a_matching_pair_is_handed_to_uvicorn(tls_pair: TlsPair) -> None:
    assert uvicorn_tls(Settings(tls_cert=tls_pair.cert, tls_key=tls_pair.key)) == {
        "ssl_certfile": str(tls_pair.cert), "ssl_keyfile": str(tls_pair.key)}


def test_one_file_without_the_other_is_refused(tls_pair: TlsPair) -> None:
    assert "the key (--tls-key / HRX_TLS_KEY) is missing" in _refusal(tls_pair.cert, None)
    assert "the certificate (--tls-cert / HRX_TLS_CERT) is missing" in _refusal(None, tls_pair.key)


def test_a_file_that_cannot_be_read_is_refused(tls_pair: TlsPair, tmp_path: Path) -> None:
    assert f"cannot read the key file {tmp_path / 'gone.key'}: No such file" in _refusal(tls_pair.cert,
                                                                                          tmp_path / "gone.key")
    assert f"cannot read the certificate file {tmp_path}: Is a directory" in _refusal(tmp_path, tls_pair.key)


def test_a_key_that_is_not_the_certificates_is_refused(tls_pair: TlsPair, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    assert "not a PEM certificate and its unencrypted private key" in _refusal(tls_pair.cert,
                                                                              make_self_signed(other).key)


def test_an_encrypted_key_is_refused_instead_of_prompting(tls_pair: TlsPair) -> None:
    key = serialization.load_pem_private_key(tls_pair.key.read_bytes(), password=None)
    tls_pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.BestAvailableEncryption(b"secret")))
    assert "unencrypted private key" in _refusal(tls_pair.cert, tls_pair.key)


def test_a_key_readable_by_others_is_warned_about(tls_pair: TlsPair, caplog: pytest.LogCaptureFixture) -> None:
    os.chmod(tls_pair.key, 0o644)
    with caplog.at_level(logging.WARNING):
        uvicorn_tls(Settings(tls_cert=tls_pair.cert, tls_key=tls_pair.key))
    assert f"TLS key {tls_pair.key} has mode 0644" in caplog.text


def _invoke(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    from exchange.cli import main

    clean = {name: None for name in os.environ if name.startswith("HRX_")}  # only what the test sets
    return CliRunner().invoke(main, args, env={**clean, **env})


def test_serve_and_up_refuse_half_a_tls_setting_before_starting_anything(tls_pair: TlsPair, tmp_path: Path) -> None:
    var = tmp_path / "var"
    served = _invoke(["serve", "--tls-cert", str(tls_pair.cert)], {"HRX_VAR_DIR": str(var)})
    assert served.exit_code == 1 and "TLS: the key (--tls-key / HRX_TLS_KEY) is missing" in served.output
    up = _invoke(["up"], {"HRX_VAR_DIR": str(var), "HRX_TLS_KEY": str(tls_pair.key)})
    assert up.exit_code == 1 and "TLS: the certificate (--tls-cert / HRX_TLS_CERT) is missing" in up.output
    assert not var.exists()  # no key, no store, no stack file


@pytest.mark.integration
def test_serve_answers_over_https_only(broker, tls_pair: TlsPair,  # type: ignore[no-untyped-def]
                                      tmp_path: Path) -> None:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HRX_")},
           "HRX_KAFKA_BOOTSTRAP": broker.bootstrap, "HRX_DATABASE_URL": f"sqlite:///{tmp_path / 'hrx.db'}",
           "HRX_PSEUDONYM_KEY": TEST_KEY.decode(), "HRX_VAR_DIR": str(tmp_path / "var")}
    migrated = subprocess.run([sys.executable, "-m", "exchange.cli", "migrate"], env=env, capture_output=True,
                              text=True, timeout=120)  # a deployment's first step: serve refuses a bare store
    assert migrated.returncode == 0, migrated.stderr
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "exchange.cli", "serve", "--port", str(port),
                                "--tls-cert", str(tls_pair.cert), "--tls-key", str(tls_pair.key)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}/api/v1/health"
    trusted = ssl.create_default_context(cafile=str(tls_pair.cert))  # the self-signed certificate as the CA

    def healthy() -> httpx.Response | None:
        if process.poll() is not None:
            pytest.fail(f"hrx serve exited with {process.returncode}:\n{(tmp_path / 'serve.log').read_text()}")
        try:
            answer = httpx.get(url, verify=trusted, timeout=10)
        except httpx.ConnectError:  # not listening yet
            return None
        return answer if answer.status_code == 200 else None

    try:
        answer = wait_for(healthy, timeout=60)
        assert answer.headers[HSTS[0]] == HSTS[1]
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port gets no HTTP answer
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=10)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # checked against the CAs
            httpx.get(url, timeout=10)
    finally:
        process.terminate()
        process.wait(30)
        log.close()

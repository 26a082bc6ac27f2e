"""TLS contexts for the network doors (adapters/tls.py): what they require, and errors that name the files."""
from __future__ import annotations

import socket
import ssl

import pytest

from adapters.tls import ServerContext, TlsConfigError, client_context, server_context


def test_the_server_context_requires_tls_1_2_and_client_certificates_with_a_ca(tls_files) -> None:  # type: ignore[no-untyped-def]
    plain = server_context(tls_files.server_cert, tls_files.server_key, handshake_timeout=7)
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2 and plain.verify_mode == ssl.CERT_NONE
    mutual = server_context(tls_files.server_cert, tls_files.server_key, tls_files.ca)
    assert mutual.verify_mode == ssl.CERT_REQUIRED


def test_wrapping_an_accepted_socket_never_handshakes_in_the_caller(tls_files) -> None:  # type: ignore[no-untyped-def]
    context = server_context(tls_files.server_cert, tls_files.server_key, handshake_timeout=7)
    assert isinstance(context, ServerContext)
    a, b = socket.socketpair()  # nothing will ever be sent on a: a handshake here would block forever
    with a, context.wrap_socket(b, server_side=True) as wrapped:
        assert wrapped.gettimeout() == 7


@pytest.mark.parametrize("which", ["key", "cert", "ca"])
def test_unusable_files_are_named(tls_files, tmp_path, which) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file")
    files = {"cert": tls_files.server_cert, "key": tls_files.server_key, "ca": tls_files.ca, which: junk}
    with pytest.raises(TlsConfigError, match=str(junk)):
        server_context(files["cert"], files["key"], files["ca"])
    with pytest.raises(TlsConfigError, match="client certificate"):
        client_context(tls_files.ca, junk)

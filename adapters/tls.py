"""TLS for the network doors (MLLP, DICOM): contexts from PEM files, with the standard ``ssl`` module.

Rules implemented (docs/rules.md, "Network doors"):

- TLS 1.2 or later. The listener presents ``--tls-cert`` / ``--tls-key``; with ``--tls-ca`` every client must
  present a certificate issued by that CA (mutual TLS), otherwise its handshake fails and it is dropped.
- A handshake never runs in a listener's accept loop: :class:`ServerContext` wraps an accepted socket without
  handshaking, and bounds every blocking operation on it by ``handshake_timeout`` seconds; the handshake is
  then made in the thread serving the connection (explicitly by the MLLP listener, by the first read for
  pynetdicom's association server, which wraps sockets in its accept loop). A client that connects and says
  nothing, or speaks plain text to a TLS door, costs one connection thread until the timeout, never the door.
"""
from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

#: Seconds a TLS handshake may take before the connection is dropped.
DEFAULT_HANDSHAKE_TIMEOUT = 30.0


class TlsConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the files."""


class ServerContext(ssl.SSLContext):
    """A server-side context whose ``wrap_socket`` defers the handshake to the connection's own thread.

    The wrapped socket's timeout is ``handshake_timeout``: the first read or write (or ``do_handshake()``)
    makes the handshake and fails after that long.
    """

    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT

    def wrap_socket(self, sock: socket.socket, server_side: bool = False, do_handshake_on_connect: bool = True,
                    suppress_ragged_eofs: bool = True, server_hostname: str | None = None,
                    session: Any = None) -> ssl.SSLSocket:
        if server_side:
            sock.settimeout(self.handshake_timeout)
            do_handshake_on_connect = False
        return super().wrap_socket(sock, server_side, do_handshake_on_connect, suppress_ragged_eofs,
                                   server_hostname, session)


def server_context(cert: Path, key: Path | None, client_ca: Path | None = None, *,
                   handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> ServerContext:
    """The listener's context: its certificate chain and key (``None``: in the ``cert`` file); with ``client_ca``,
    mutual TLS."""
    context = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.handshake_timeout = handshake_timeout
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot use the TLS certificate {cert} with the key {key or cert}: {_why(exc)}") from None
    if client_ca is not None:
        _load_ca(context, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A client's context: trusts ``ca`` (else the system's CAs), presents ``cert``/``key`` when given."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        _load_ca(context, ca)
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"cannot use the TLS client certificate {cert}: {_why(exc)}") from None
    return context


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot use the TLS CA file {ca}: {_why(exc)}") from None


def _why(exc: OSError | ssl.SSLError) -> str:
    return exc.strerror or getattr(exc, "reason", None) or str(exc) or type(exc).__name__

"""The MLLP listener as a network door (docs/rules.md, "Network doors"): the allow-list binds source addresses
to an institution and its MSH-4 ids; TLS, and mutual TLS, with the handshake off the accept loop."""
from __future__ import annotations

import logging
import socket
import ssl

import pytest

from adapters.hl7 import mllp
from adapters.tls import client_context, server_context
from tests.adapters.hl7.hl7data import CHAOYANG, fields, renumber, replace

CHAOYANG_SENDERS = """
hl7:
  - source: 127.0.0.0/8
    institution: bj-chaoyang-001
    facilities: [BJCY001]
"""


def test_an_allowed_address_publishes_under_its_facility(mllp_door, allow_file) -> None:  # type: ignore[no-untyped-def]
    server, _, publisher = mllp_door(allow_file(CHAOYANG_SENDERS))
    with mllp.MLLPClient(*server.address) as client:
        assert fields(client.send(CHAOYANG))["MSA-1"] == "AA"
        # the institution id itself is always a facility id of its senders
        ack = fields(client.send(renumber(replace(CHAOYANG, "|BJCY001|", "|bj-chaoyang-001|"), 2)))
        assert ack["MSA-1"] == "AA"
    assert len(publisher.records) == 2


def test_another_institutions_facility_is_refused_with_ar_and_nothing_is_published(  # type: ignore[no-untyped-def]
        mllp_door, allow_file) -> None:
    server, _, publisher = mllp_door(allow_file(CHAOYANG_SENDERS + """
  - source: 127.0.0.0/8
    institution: hb-wuhan-001
    facilities: [WH001]
"""))
    with mllp.MLLPClient(*server.address) as client:
        for facility in ("WH001", "hb-wuhan-001", "OTHER"):
            ack = fields(client.send(replace(CHAOYANG, "|BJCY001|", f"|{facility}|")))
            assert ack["MSA-1"] == "AR"
            assert ack["ERR-2"] == "MSH^1^4" and ack["ERR-3"].startswith("103")
            assert "only as its own institution" in ack["ERR-8"]
    assert publisher.records == []


def test_an_address_not_on_the_list_is_closed_unread(mllp_door, allow_file, caplog) -> None:  # type: ignore[no-untyped-def]
    elsewhere = mllp_door(allow_file(CHAOYANG_SENDERS.replace("127.0.0.0/8", "10.0.0.0/8")))
    # 127.0.0.1 is on the list, but bound to another institution than this listener's
    other_institution = mllp_door(allow_file(CHAOYANG_SENDERS.replace("bj-chaoyang-001", "hb-wuhan-001")))
    for server, _, publisher in (elsewhere, other_institution):
        with caplog.at_level(logging.WARNING, logger="adapters.hl7.mllp"):
            with mllp.MLLPClient(*server.address) as client, pytest.raises(OSError):
                client.send(CHAOYANG)
        assert publisher.records == []
    refusals = [r.getMessage() for r in caplog.records if "not on this listener's allow-list" in r.getMessage()]
    assert len(refusals) == 2 and all("BJCY001" not in text for text in refusals)


def test_mllp_over_tls(mllp_door, tls_files) -> None:  # type: ignore[no-untyped-def]
    server, _, publisher = mllp_door(ssl_context=server_context(tls_files.server_cert, tls_files.server_key))
    with mllp.MLLPClient(*server.address, ssl_context=client_context(tls_files.ca),
                         server_hostname="localhost") as client:
        assert isinstance(client.sock, ssl.SSLSocket)
        assert fields(client.send(CHAOYANG))["MSA-1"] == "AA"
    assert len(publisher.records) == 1
    # a client that does not trust the server's CA gives up
    with pytest.raises(ssl.SSLError):
        mllp.MLLPClient(*server.address, ssl_context=client_context(tls_files.other_ca), server_hostname="localhost")


def test_plain_text_or_silence_at_a_tls_listener_never_wedges_it(mllp_door, tls_files) -> None:  # type: ignore[no-untyped-def]
    server, _, publisher = mllp_door(ssl_context=server_context(tls_files.server_cert, tls_files.server_key),
                                     max_connections=4)
    silent = socket.create_connection(server.address, timeout=10)  # connects, never starts its handshake
    try:
        with socket.create_connection(server.address, timeout=10) as plain:
            plain.sendall(mllp.frame(CHAOYANG))
            assert mllp.VT not in _until_closed(plain)  # dropped (at most a TLS alert): no ACK
        with mllp.MLLPClient(*server.address, ssl_context=client_context(tls_files.ca),
                             server_hostname="localhost") as client:
            assert fields(client.send(CHAOYANG))["MSA-1"] == "AA"
    finally:
        silent.close()
    assert len(publisher.records) == 1


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes the connection (an orderly end or a reset)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_mutual_tls_refuses_a_client_without_a_certificate(mllp_door, tls_files) -> None:  # type: ignore[no-untyped-def]
    server, _, publisher = mllp_door(ssl_context=server_context(tls_files.server_cert, tls_files.server_key,
                                                                tls_files.ca))
    with pytest.raises(OSError):  # TLS 1.3: the refusal arrives with the first read
        with mllp.MLLPClient(*server.address, ssl_context=client_context(tls_files.ca),
                             server_hostname="localhost") as client:
            client.send(CHAOYANG)
    assert publisher.records == []
    with mllp.MLLPClient(*server.address, server_hostname="localhost",
                         ssl_context=client_context(tls_files.ca, tls_files.client_cert, tls_files.client_key)) as ok:
        assert fields(ok.send(CHAOYANG))["MSA-1"] == "AA"

"""MLLP: the frame reader resyncs on broken framing and streams oversized blocks; the server survives broken
input and bounds its connections. A real socket client against the server running in a thread."""
from __future__ import annotations

import socket
import threading

import pytest

from adapters.hl7 import Hl7Receiver, mllp
from tests.adapters.hl7.hl7data import CHAOYANG, WUHAN_GBK, fields, renumber, replace
from tests.fixtures.waiting import wait_for


def _pair(max_bytes: int = 1024) -> tuple[socket.socket, mllp.FrameReader]:
    a, b = socket.socketpair()
    return a, mllp.FrameReader(b, max_bytes=max_bytes, idle_timeout=5, frame_timeout=5)


def test_frame_reader_resyncs_on_broken_framing() -> None:
    peer, reader = _pair(max_bytes=100)
    peer.sendall(b"garbage" + mllp.frame(b"one") + b"\r\n" + b"\x0bhalf a fra" + mllp.frame(b"two")
                 + b"\x0bthree\x1c" + mllp.frame(b"x" * 500) + mllp.frame(b"four"))
    peer.sendall(b"\x0bcut off")
    peer.close()
    got = [reader.read() for _ in range(6)]
    assert [f.payload for f in got[:3]] == [b"one", b"two", b"three"]  # FS without CR accepted
    assert got[3].oversize and got[3].size == 500 and got[3].payload == b"x" * 500
    assert got[4].payload == b"four" and got[5] is None  # EOF inside a block: nothing delivered
    assert reader.discarded == len(b"garbage") + len(b"\x0bhalf a fra")


def test_frame_reader_streams_an_oversized_block_without_buffering_it() -> None:
    peer, reader = _pair(max_bytes=1000)
    big = b"MSH|^~\\&|" + b"y" * 200_000

    def send() -> None:
        peer.sendall(mllp.frame(big) + mllp.frame(b"next"))

    threading.Thread(target=send, daemon=True).start()
    first = reader.read()
    assert first.oversize and first.size == len(big) and first.payload == big[:mllp.HEAD_BYTES]
    assert reader.read().payload == b"next"
    peer.close()


def test_mllp_server_survives_broken_frames_and_oversized_messages(server: mllp.MLLPServer,
                                                                   receiver: Hl7Receiver) -> None:
    with mllp.MLLPClient(*server.address) as client:
        client.send_raw(b"GET / HTTP/1.1\r\n\r\n")  # not MLLP: discarded
        client.send_raw(b"\x0bMSH|^~\\&|truncated by a sender restart")
        assert fields(client.send(CHAOYANG))["MSA-1"] == "AA"
        big = replace(CHAOYANG, "空腹采血", "空腹采血" + "长" * 40_000)
        refused = fields(client.send(big))
        assert (refused["MSA-1"], refused["MSA-2"]) == ("AE", "CY20240315000123")
        assert "exceeds the limit of 65536 bytes" in refused["ERR-8"]
        assert fields(client.send(renumber(CHAOYANG, 2)))["MSA-1"] == "AA"  # the connection is still usable
        not_hl7 = fields(client.send(b"hello"))
        assert (not_hl7["MSA-1"], not_hl7["ERR-3"][:3]) == ("AE", "100")
        gbk = fields(client.send(replace(WUHAN_GBK, "WH0316-0042", "WH-T-1", "gbk")), "gb18030")
        assert gbk["MSA-1"] == "AA" and gbk["MSH-18"] == "GBK"  # answered in GBK (its codes stay unmapped here)
    assert len(receiver.publisher.records) == 4  # 1 + 1 + the GBK message's 2 reports


def test_mllp_connections_are_bounded_and_concurrent(server) -> None:  # type: ignore[no-untyped-def]
    with mllp.MLLPClient(*server.address) as a, mllp.MLLPClient(*server.address) as b:
        assert fields(a.send(renumber(CHAOYANG, 3)))["MSA-1"] == "AA"
        assert fields(b.send(renumber(CHAOYANG, 4)))["MSA-1"] == "AA"
        with mllp.MLLPClient(*server.address) as c:  # over max_connections=2: closed at once
            with pytest.raises((ConnectionError, OSError)):
                c.send(renumber(CHAOYANG, 5))
    wait_for(lambda: server.open_connections == 0)  # the server notices the closed connections
    with mllp.MLLPClient(*server.address) as d:  # slots are given back
        assert fields(d.send(renumber(CHAOYANG, 6)))["MSA-1"] == "AA"

"""MLLP (Minimal Lower Layer Protocol release 2, HL7 v2 transport): framing, a bounded threaded server and a
client.

A block is ``<VT> payload <FS><CR>`` (0x0B … 0x1C 0x0D). The framing works on bytes, before any character
decoding: none of the three framing bytes can occur inside UTF-8, GBK or GB18030 text (GBK trail bytes are
0x40–0xFE, GB18030 four-byte sequences use 0x30–0x39 and 0x81–0xFE), so a frame can be cut out safely and
decoded later according to its own MSH-18.

Broken input, as MLLP release 2 asks of a receiver, never brings the server down:

- bytes outside a block (no start block, garbage, a stray CR/LF between blocks) are discarded; a peer that
  sends more than ``max_bytes`` of them without any start block is not speaking MLLP and is disconnected;
- a start block inside an unfinished block abandons the partial block (the sender restarted) and resyncs
  on the new one; nothing is acknowledged for an incomplete block, so the sender times out and resends;
- a block larger than ``max_bytes`` is read to its end and discarded, keeping only its head (enough for the
  MSH segment) so that the application can refuse it with a proper ACK; the connection stays usable;
- ``<FS>`` without the trailing ``<CR>`` is accepted as the end of the block (lenient: several LIS do it);
- a peer that stops in the middle of a block for ``frame_timeout`` seconds, or stays idle between blocks
  for ``idle_timeout`` seconds, is disconnected.

Threading model: :class:`MLLPServer` is a ``socketserver.ThreadingTCPServer`` with one thread per
connection and a hard cap (``max_connections``; further connections are accepted and closed at once). MLLP
is strictly request/response per connection and the work per message is mostly blocking I/O (waiting for
the Kafka acknowledgement, which releases the GIL), so a thread per connection is the simplest correct
model; a hospital opens one to a handful of connections, so the cap, not the scheduler, is what matters.
asyncio would have needed an executor around every blocking call and gained nothing here. No lock is held
across the Kafka wait (only one per duplicate key, see :mod:`adapters.hl7.receiver`), so messages from
concurrent connections are in flight together, and sends that queue up while a produce request is
outstanding share the next one.

The door (docs/rules.md, "Network doors"): ``admit`` decides, from the peer's address alone and before anything
is read, whether a connection is served (one not admitted is closed at once and logged without any content).
With ``ssl_context`` the listener speaks MLLP over TLS; the handshake is made in the connection's thread,
bounded by ``handshake_timeout``, so a peer that stalls it or speaks plain text never holds up the accept
loop or another connection (:mod:`adapters.tls`).
"""
from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

VT = b"\x0b"  # start block
FS = b"\x1c"  # end block
CR = b"\x0d"
DEFAULT_MAX_BYTES = 1024 * 1024
HEAD_BYTES = 64 * 1024  # kept of an oversized block: the MSH segment is in there
_RECV = 65536
_BLANK = frozenset(b"\r\n\t ")


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in an MLLP block."""
    return VT + payload + FS + CR


@dataclass(frozen=True)
class Frame:
    """One complete block. ``oversize``: only the first HEAD_BYTES are in ``payload``; ``size`` is the full size."""

    payload: bytes
    size: int
    oversize: bool = False


class FrameReader:
    """Reads MLLP blocks from a socket, resyncing on broken framing (see the module docstring)."""

    def __init__(self, sock: socket.socket, max_bytes: int = DEFAULT_MAX_BYTES,
                 idle_timeout: float | None = 3600.0, frame_timeout: float | None = 60.0,
                 peer: str = "?") -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.sock = sock
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.peer = peer
        self._buf = bytearray()
        self.discarded = 0  # bytes thrown away outside blocks or in abandoned blocks (for diagnostics)

    def _recv(self, in_frame: bool) -> bool:
        self.sock.settimeout(self.frame_timeout if in_frame else self.idle_timeout)
        chunk = self.sock.recv(_RECV)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def _discard(self, count: int, why: str) -> None:
        junk = self._buf[:count]
        del self._buf[:count]
        if any(b not in _BLANK for b in junk):
            self.discarded += len(junk)
            log.warning("mllp %s: discarded %d byte(s) %s", self.peer, len(junk), why)

    def read(self) -> Frame | None:
        """The next block, or None once the peer closed the connection. Socket timeouts propagate."""
        outside = 0
        while True:
            start = self._buf.find(VT)
            if start < 0:
                outside += len(self._buf)
                self._discard(len(self._buf), "outside any block (no start block <VT>)")
                if outside > self.max_bytes:
                    raise ConnectionError(f"{outside} bytes without an MLLP start block: not an MLLP peer")
                if not self._recv(in_frame=False):
                    return None
                continue
            if start:
                self._discard(start, "before a start block")
            result = self._read_block()
            if result is not None:
                return result
            if not self._buf:  # EOF inside a block
                return None

    def _read_block(self) -> Frame | None:
        """Buffer starts with VT. Returns a frame, or None when the block was abandoned (resync or EOF)."""
        scanned = 1
        head: bytes | None = None  # set once the block is oversized: the buffer then holds only the tail
        size = 0
        while True:
            end = self._buf.find(FS, scanned)
            restart = self._buf.find(VT, 1 if head is None else 0, end if end >= 0 else len(self._buf))
            if restart >= 0:
                self._discard(restart, "of an unfinished block: a new start block arrived before <FS>")
                return None
            if end >= 0:
                if head is None:
                    payload = bytes(self._buf[1:end])
                    size = len(payload)
                else:
                    size += end
                    payload = head + bytes(self._buf[:max(0, min(end, HEAD_BYTES - len(head)))])
                consumed = end + 1
                if len(self._buf) > consumed and self._buf[consumed] == CR[0]:
                    consumed += 1
                del self._buf[:consumed]
                if head is None and size <= self.max_bytes:
                    return Frame(payload, size)
                return Frame(payload[:HEAD_BYTES], size, oversize=True)
            if head is None and len(self._buf) - 1 > self.max_bytes:
                head = bytes(self._buf[1:1 + HEAD_BYTES])
                size = len(self._buf) - 1
                self._buf.clear()
            elif head is not None:
                if len(head) < HEAD_BYTES:
                    head += bytes(self._buf[:HEAD_BYTES - len(head)])
                size += len(self._buf)
                self._buf.clear()
            scanned = len(self._buf)
            if not self._recv(in_frame=True):
                if self._buf or head is not None:
                    log.warning("mllp %s: connection closed inside a block (%d byte(s) lost)", self.peer,
                                size or len(self._buf))
                self._buf.clear()
                return None


@dataclass(frozen=True)
class Peer:
    """The other end of a connection: its address (``host``, as the socket reports it) and port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


#: The application: a frame in, the bytes of the reply out (None: send nothing, e.g. for an incoming ACK).
FrameHandler = Callable[[Frame, Peer], "bytes | None"]
#: The door: whether a connection from this address is served at all.
Admission = Callable[[str], bool]


class _Connection(socketserver.BaseRequestHandler):
    server: MLLPServer

    def handle(self) -> None:
        peer = Peer(str(self.client_address[0]), int(self.client_address[1]))
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock = self.server.secure(self.request, peer)
        if sock is None:
            return
        try:
            self._serve(sock, peer)
        finally:
            if sock is not self.request:
                sock.close()

    def _serve(self, sock: socket.socket, peer: Peer) -> None:
        reader = FrameReader(sock, self.server.max_bytes, self.server.idle_timeout, self.server.frame_timeout, peer)
        log.info("mllp %s: connected", peer)
        try:
            while not self.server.closing.is_set():
                block = reader.read()
                if block is None:
                    break
                try:
                    reply = self.server.application(block, peer)
                except Exception:  # noqa: BLE001 - one bad message must never take the listener down
                    log.exception("mllp %s: the handler failed; closing without an acknowledgement", peer)
                    break
                if reply is not None:
                    sock.sendall(frame(reply))
        except TimeoutError:
            log.info("mllp %s: timed out, closing", peer)
        except OSError as exc:
            log.info("mllp %s: %s", peer, exc)
        finally:
            log.info("mllp %s: disconnected", peer)


class MLLPServer(socketserver.ThreadingTCPServer):
    """Thread-per-connection MLLP listener with a cap on concurrent connections."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], application: FrameHandler, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_connections: int = 32, idle_timeout: float | None = 3600.0,
                 frame_timeout: float | None = 60.0, admit: Admission | None = None,
                 ssl_context: ssl.SSLContext | None = None, handshake_timeout: float = 30.0) -> None:
        if handshake_timeout <= 0:
            raise ValueError("the TLS handshake timeout must be positive (never unbounded)")
        self.application = application
        self.admit = admit
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.max_connections = max_connections
        self.closing = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: dict[socket.socket, socket.socket] = {}  # accepted socket → the one in use (TLS or it)
        self._open_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__(address, _Connection)

    @property
    def open_connections(self) -> int:
        with self._open_lock:
            return len(self._open)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server_address[:2]
        return str(host), int(port)

    def verify_request(self, request, client_address):  # type: ignore[no-untyped-def]
        """The door, in the accept loop (an address lookup, no I/O): a peer not admitted is closed unread."""
        if self.admit is None or self.admit(str(client_address[0])):
            return True
        log.warning("mllp %s: connection refused: the address is not on this listener's allow-list",
                    client_address[0])
        return False

    def secure(self, request: socket.socket, peer: Peer) -> socket.socket | None:
        """The socket to speak MLLP on: ``request`` itself, or over TLS once the handshake succeeded within
        ``handshake_timeout`` (None after a failed handshake, logged)."""
        if self.ssl_context is None:
            return request
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            log.info("mllp %s: TLS setup failed: %s", peer, exc)
            return None
        with self._open_lock:
            if request in self._open:
                self._open[request] = tls
        try:
            tls.settimeout(self.handshake_timeout)
            tls.do_handshake()
        except (OSError, ssl.SSLError) as exc:  # TimeoutError is an OSError
            log.warning("mllp %s: TLS handshake failed, connection dropped: %s", peer, exc)
            tls.close()
            return None
        return tls

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        if not self._slots.acquire(blocking=False):
            log.warning("mllp %s: refused, %d connections already open", client_address[0], self.max_connections)
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open[request] = request
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request, client_address):  # type: ignore[no-untyped-def]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._open_lock:
            if self._open.pop(request, None) is None:
                return
        self._slots.release()

    def start(self) -> MLLPServer:
        """Serve in a background thread (tests, ``hrx up``); ``stop()`` ends it."""
        self._thread = threading.Thread(target=self.serve_forever, name=f"mllp-{self.address[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close open connections (a message in progress finishes first) and the socket."""
        self.closing.set()
        self.shutdown()
        with self._open_lock:
            conns = list(self._open.values())
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        self.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> MLLPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MLLPClient:
    """A blocking MLLP client: ``send(payload)`` returns the reply block (the ACK). With ``ssl_context``, over
    TLS (``server_hostname``: the name the server's certificate must carry, default ``host``)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if ssl_context is not None:
            try:
                self.sock = ssl_context.wrap_socket(self.sock, server_hostname=server_hostname or host)
            except BaseException:
                self.sock.close()
                raise
        self.timeout = timeout
        self._reader = FrameReader(self.sock, max_bytes=64 * 1024 * 1024, idle_timeout=timeout,
                                   frame_timeout=timeout, peer=f"{host}:{port}")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> bytes | None:
        block = self._reader.read()
        return None if block is None else block.payload

    def send(self, payload: bytes) -> bytes:
        self.sock.sendall(frame(payload))
        reply = self.receive()
        if reply is None:
            raise ConnectionError("the server closed the connection without a reply")
        return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MLLPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

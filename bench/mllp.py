"""5. HL7 v2 over MLLP: messages/s, each ACKed only after the Kafka publish, with 1 and 8 concurrent senders,
against a bare MLLP server in the same run (same framing server, same python-hl7 parse, answers AA without
mapping, pseudonymizing, publishing or journaling).

Ours: ``adapters.hl7.Hl7Receiver`` (with its SQLite ACK journal) behind ``adapters.hl7.MLLPServer``,
publishing to an embedded tansu broker. Messages: the ORU^R01 sample tests/data/hl7/bj-chaoyang-001-v251-utf8.hl7
with a unique MSH-10 and filler order number per message (so none is a duplicate).
"""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from bench.common import ROOT, Outcome, ratio, say, summary_ms

SAMPLE = ROOT / "tests" / "data" / "hl7" / "bj-chaoyang-001-v251-utf8.hl7"
INSTITUTION = "bj-chaoyang-001"


def messages(n: int, tag: str) -> list[bytes]:
    text = SAMPLE.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r")
    return [text.replace(b"CY20240315000123", f"B{tag}{i:09d}".encode())
                .replace(b"CY2403150088", f"R{tag}{i:09d}".encode()) for i in range(n)]


def _bare(frame, peer="-"):  # type: ignore[no-untyped-def]
    import hl7

    message = hl7.parse(frame.payload.decode("utf-8"))
    return str(message.create_ack("AA")).encode("utf-8")


def _drive(port: int, payloads: list[bytes], senders: int) -> tuple[float, list[float], int]:
    from adapters.hl7 import MLLPClient

    latencies: list[float] = []
    refused = [0]
    lock = threading.Lock()
    shares = [payloads[i::senders] for i in range(senders)]

    def send(share: list[bytes]) -> None:
        with MLLPClient("127.0.0.1", port) as client:
            mine = []
            for payload in share:
                t0 = time.perf_counter()
                ack = client.send(payload)
                mine.append(time.perf_counter() - t0)
                if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
                    with lock:
                        refused[0] += 1
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=send, args=(s,)) for s in shares]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies, refused[0]


def run(quick: bool = False) -> Outcome:
    try:
        from adapters.hl7 import AckJournal, Hl7Receiver, MLLPServer
    except ImportError as exc:
        return Outcome("mllp", "HL7 MLLP messages/s", status="not-done", notes=[f"adapters not importable: {exc}"])
    from codes import load_codebook
    from exchange.broker import EmbeddedBroker, ensure_topics
    from schemas.topics import DEFAULT_PARTITIONS
    from adapters.pseudonymize import Pseudonymizer
    from adapters.publish import Publisher

    n = 300 if quick else 2000
    out = Outcome("mllp", "HL7 v2 MLLP: messages/s with ACK after the Kafka publish vs a bare AA server")
    out.sizes = {"messages_per_run": n, "sample": SAMPLE.name, "senders": [1, 8], "reports_per_message": 1,
                 "observations_per_message": 6}
    tmp = Path(tempfile.mkdtemp(prefix="hrx-bench-mllp-"))
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, DEFAULT_PARTITIONS)
        publisher = Publisher(broker.bootstrap, client_id="hrx-hl7")
        journal = AckJournal(tmp / "acks.db")
        receiver = Hl7Receiver(INSTITUTION, load_codebook(), Pseudonymizer(b"hrx-bench-key-0123456789"), publisher,
                               journal)
        for senders in (1, 8):
            rates = {}
            for who, app in (("bare", _bare), ("ours", receiver)):
                with MLLPServer(("127.0.0.1", 0), app, max_connections=16).start() as server:
                    port = server.address[1]
                    _drive(port, messages(10, f"W{who}{senders}"), 1)  # warm-up
                    seconds, latencies, refused = _drive(port, messages(n, f"{who}{senders}"), senders)
                rates[who] = n / seconds
                out.figures[f"{who}_{senders}_senders_msgs_per_s"] = round(rates[who], 1)
                out.figures[f"{who}_{senders}_senders_latency"] = summary_ms(latencies)
                if refused:
                    out.notes.append(f"{who} with {senders} senders: {refused} message(s) not acknowledged AA")
                say(f"mllp: {senders} sender(s) {who:5s} {rates[who]:8.1f} msg/s "
                    f"(p50 {summary_ms(latencies)['p50_ms']} ms, refused {refused})")
            r = ratio(rates["ours"], rates["bare"])
            out.ratios[f"{senders}_senders_ours_vs_bare"] = r
            out.goals[f"{senders}_senders_ge_0.5x_bare"] = r is not None and r >= 0.5
        journal.close()
        publisher.close()
    return out


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv).as_dict())

"""HL7 v2 sample messages and helpers shared by the adapter's tests (the fixtures are in conftest.py)."""
from __future__ import annotations

import threading
import uuid
from pathlib import Path

import hl7 as hl7lib

from adapters.publish import Publisher

DATA = Path(__file__).parent.parent.parent / "data" / "hl7"
CHAOYANG = (DATA / "bj-chaoyang-001-v251-utf8.hl7").read_bytes()
CORRECTION = (DATA / "bj-chaoyang-001-correction.hl7").read_bytes()
WUHAN_GBK = (DATA / "hb-wuhan-001-v23-gbk.hl7").read_bytes()
XUHUI = (DATA / "sh-xuhui-001-sn-ce.hl7").read_bytes()
BATCH = DATA / "bj-chaoyang-001-batch.hl7"
CHAOYANG_ID = "110105198003120024"
WUHAN_ID = "420102197506151235"


def replace(raw: bytes, old: str, new: str, codec: str = "utf-8") -> bytes:
    assert old.encode(codec) in raw, old
    return raw.replace(old.encode(codec), new.encode(codec))


def renumber(raw: bytes, n: int, codec: str = "utf-8") -> bytes:
    """A distinct message (control ID) about a distinct result (filler order number)."""
    out = replace(raw, "CY20240315000123", f"CY-T-{n:06d}", codec)
    return out.replace(b"CY2403150088", f"CY-R-{n:06d}".encode())


def broken(old: str, new: str, raw: bytes = CHAOYANG) -> bytes:
    return replace(raw, old, new)


def fields(ack: bytes, codec: str = "utf-8") -> dict[str, str]:
    """MSA and ERR fields of an ACK, parsed with python-hl7."""
    msg = hl7lib.parse(ack.decode(codec))
    msa = msg.segment("MSA")
    out = {"MSA-1": str(msa[1]), "MSA-2": str(msa[2]), "MSA-3": str(msa[3]) if len(msa) > 3 else "",
           "MSH-9": str(msg.segment("MSH")[9]), "MSH-18": str(msg.segment("MSH")[18]) if len(msg.segment("MSH")) > 18
           else ""}
    try:
        err = msg.segment("ERR")
    except KeyError:
        return out
    for n in (1, 2, 3, 4, 8):
        out[f"ERR-{n}"] = str(err[n]) if len(err) > n else ""
    return out


class CountingPublisher(Publisher):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.published = 0

    def publish(self, records) -> None:  # type: ignore[no-untyped-def]
        batch = list(records)
        super().publish(batch)
        self.published += len(batch)


def start_engine(bootstrap: str, database) -> tuple[threading.Event, threading.Thread]:  # type: ignore[no-untyped-def]
    """An engine in a fresh consumer group (e.g. on a restarted, empty, memory-only broker); set the event to stop."""
    from exchange.engine import ResultEngine

    stop = threading.Event()
    worker = ResultEngine(bootstrap, database, f"test-{uuid.uuid4().hex[:8]}", Publisher(bootstrap))
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread

"""Batch files: one item per MSH, envelopes and MLLP framing dropped, orphan segments kept for refusal."""
from __future__ import annotations

from adapters.hl7 import mllp, split_batch
from tests.adapters.hl7.hl7data import BATCH, CHAOYANG, CORRECTION


def test_split_batch_files() -> None:
    messages = split_batch(BATCH.read_bytes())
    assert len(messages) == 2 and all(m.startswith(b"MSH|") for m in messages)
    assert b"\n" not in messages[0] and b"CY-B-0002" in messages[1]
    orphan = split_batch(b"PID|1\nOBX|1\n" + CHAOYANG)
    assert len(orphan) == 2 and orphan[0].startswith(b"PID")
    assert split_batch(mllp.frame(CHAOYANG) + mllp.frame(CORRECTION)) == [CHAOYANG, CORRECTION]

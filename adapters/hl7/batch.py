"""HL7 v2 batch files (file mode): the messages of a file, without their batch envelopes.

HL7 v2.5.1 chapter 2, "HL7 batch protocol": a file may wrap batches in FHS … FTS and messages in BHS …
BTS; each message starts with its MSH. Files exported by LIS often carry MLLP framing bytes too.
"""
from __future__ import annotations

import re

from adapters.hl7.mllp import FS, VT

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


def split_batch(data: bytes) -> list[bytes]:
    """The messages of a file: each MSH starts one; FHS/BHS/BTS/FTS envelopes and MLLP framing bytes dropped.

    Segments before any MSH come back as one item of their own, so that it is refused (not silently lost).
    Works on bytes (CR, LF and the framing bytes never occur inside UTF-8 or GB18030 characters).
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    data = data.replace(VT, b"\r").replace(FS, b"\r")
    messages: list[list[bytes]] = []
    for line in _LINE_ENDS.split(data):
        if not line.strip():
            continue
        tag = line[:3]
        if tag in (b"FHS", b"BHS", b"BTS", b"FTS"):
            messages.append([])
        elif tag == b"MSH" or not messages:
            messages.append([line])
        else:
            messages[-1].append(line)
    return [b"\r".join(m) + b"\r" for m in messages if m]


"""MSH-18 character sets: which codec a message is decoded with, and its ACK encoded in.

Rules implemented:

- MSH-18 ``UNICODE UTF-8``/``UTF-8``; ``GB 18030-2000``, ``GB18030``, ``GBK``, ``GB2312``, ``CHINESE``,
  ``ISO IR58`` → decoded as GB18030 (a superset of GBK and GB 2312); ``8859/1``; empty or ``ASCII`` → UTF-8
  when the bytes are valid UTF-8, else GB18030 (undeclared GBK is common). Any other value is refused (103).
- A message declared GB* whose bytes are valid non-ASCII UTF-8 is read as UTF-8 (GBK text is practically
  never valid UTF-8; mislabelled interface engines are); one declared UTF-8 that is not is refused (102).
- MSH-18 itself is read from the MSH segment alone, decoded first as UTF-8 and then as GB18030 (a GBK
  trail byte may be 0x7C ``|``, so raw bytes are never split into fields).
- The ACK is encoded in the message's character set: the declared one, or the detected one when undeclared.
"""
from __future__ import annotations

import logging
import re

from adapters.hl7.exceptions import Hl7Error
from adapters.hl7.segments import split_segments
from schemas.resident_id import scrub

log = logging.getLogger(__name__)

_CHARSETS = {
    "UNICODEUTF8": "utf-8", "UTF8": "utf-8", "UNICODE": "utf-8",
    "GB180302000": "gb18030", "GB180302005": "gb18030", "GB18030": "gb18030", "GBK": "gb18030",
    "GB2312": "gb18030", "GB231280": "gb18030", "CHINESE": "gb18030", "ISOIR58": "gb18030", "EUCCN": "gb18030",
    "8859/1": "latin-1", "ISO88591": "latin-1",
}
_AUTO_CHARSETS = ("", "ASCII", "USASCII")
_BOM = b"\xef\xbb\xbf"


def _header_segment(raw: bytes) -> bytes:
    start = raw.lstrip(b"\r\n\t " + _BOM)
    end = min((i for i in (start.find(b"\r"), start.find(b"\n")) if i >= 0), default=len(start))
    return start[:end]


def header_text(raw: bytes) -> str:
    """The MSH segment as text: UTF-8 if it is valid UTF-8, else GB18030 (never by splitting raw bytes)."""
    head = _header_segment(raw)
    if not head.startswith(b"MSH"):
        raise Hl7Error("the message does not start with an MSH segment", "MSH", "100")
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return head.decode("gb18030", errors="replace")


def declared_charset(header: str) -> str:
    """MSH-18 of the MSH segment alone; "" when it has no usable separators (refused later, with its location)."""
    if len(header) < 4 or header[3].isalnum() or header[3].isspace():
        return ""
    return split_segments(header)[0].get(18)


def charset_of(declared: str) -> str | None:
    """Python codec for an MSH-18 value; None means undeclared (auto: UTF-8, else GB18030)."""
    key = re.sub(r"[\s_\-]", "", declared.upper())
    if key in _AUTO_CHARSETS:
        return None
    if key in _CHARSETS:
        return _CHARSETS[key]
    raise Hl7Error(f"character set {declared!r} is not supported (UNICODE UTF-8, GB 18030-2000, GBK, 8859/1)",
                   "MSH^1^18", "103")


def reply_codec(header: str) -> str:
    """The codec for answering a message known only by its MSH segment (one too large to be read whole)."""
    return charset_of(declared_charset(header)) or ("utf-8" if header.isascii() else "gb18030")


def decode(raw: bytes) -> tuple[str, str]:
    """Decode a message according to its MSH-18; returns (text, codec for the reply)."""
    declared = declared_charset(header_text(raw))
    codec = charset_of(declared)
    if raw.startswith(_BOM):
        raw = raw[3:]
    if codec is None:
        for candidate in ("utf-8", "gb18030"):
            try:
                return raw.decode(candidate), candidate
            except UnicodeDecodeError:
                continue
        raise Hl7Error("the message is neither valid UTF-8 nor GB18030: declare its character set in MSH-18",
                       "MSH^1^18", "102")
    if codec == "gb18030" and not raw.isascii():
        try:  # GBK text is practically never valid UTF-8: this is a mislabelled UTF-8 message
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            log.warning("hl7: MSH-18 declares %s but the message is UTF-8; read as UTF-8", scrub(declared))
            return text, codec
    try:
        return raw.decode(codec), codec
    except UnicodeDecodeError as exc:
        raise Hl7Error(f"byte {exc.start} is not valid {declared} (MSH-18)", "MSH^1^18", "102") from None

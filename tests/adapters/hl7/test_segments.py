"""The segment split reads every field as python-hl7's parser does, with python-hl7's escape handling and
with the adapter's own (the stand-down of :mod:`adapters.hl7.python_hl7_compat`)."""
from __future__ import annotations

import hashlib
import hmac
from types import SimpleNamespace

import hl7 as hl7lib
import pytest

from adapters.hl7 import Hl7Receiver, decode, parse_header, python_hl7_compat
from tests.adapters.hl7.hl7data import CHAOYANG, CORRECTION, WUHAN_GBK, XUHUI
from tests.fixtures.pseudonyms import TEST_KEY


def _python_hl7_reps(message, seg, n: int) -> list[list[list[str]]]:  # type: ignore[no-untyped-def]
    """Field n of a python-hl7 segment as repetitions → components → subcomponents, unescaped."""
    if n >= len(seg):
        return []
    def text(value: str) -> str:
        return message.unescape(value).replace("\r", "\n")
    return [[[text(rep)]] if isinstance(rep, str) else
            [[text(comp)] if isinstance(comp, str) else [text(str(s)) for s in comp] for comp in rep]
            for rep in seg[n]]


ODD = ("MSH|^~\\&|A\\F\\B|FAC^X&Y|R|R|20240101||ORU^R01|C1|P|2.5.1\r"
       "PID|1||1^^^&2.16&ISO^NNCHN~2^^^X||N\\S\\M^\\T\\x\\.br\\y||\r"
       "OBX|1|ST|A^B&C&^L~D||x\\E\\y\\X41\\z^^~||||F|\rZZZ\rNTE|  ")


@pytest.mark.parametrize("text", [decode(raw)[0] for raw in (CHAOYANG, CORRECTION, WUHAN_GBK, XUHUI)] + [
    ODD, "MSH|^~|A|B|||20240101||ORU^R01|C2|P|2.5\rOBX|1|a&b^c~d&e",  # MSH-2 short: defaults for the rest
    "MSH#$%!@#A#B#C#D#20240101##ORU$R01#C3#P#2.4\rOBX#1#NM#X$Y@Z%W#5$6%7",  # other separators
])
@pytest.mark.parametrize("unescape", ["python-hl7", "stand-down"])
def test_the_segment_split_gives_python_hl7s_tree(text: str, unescape: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field reads the same as through python-hl7's parser (repetitions, components, subcomponents,
    escapes), and the duplicate digest is the one computed from python-hl7's rendering before."""
    if unescape == "stand-down":
        monkeypatch.setattr(python_hl7_compat, "unescape", python_hl7_compat.unescape_fallback)
    message, _ = parse_header(text)
    theirs = hl7lib.parse(message.text)
    assert [str(s[0]) for s in theirs] == [s.name for s in message.segments]
    for seg, ours in zip(theirs, message.segments, strict=True):
        assert len(seg) == len(ours.fields)
        for n in range(3 if ours.name == "MSH" else 1, len(seg) + 2):
            assert ours.reps(n) == _python_hl7_reps(theirs, seg, n), (ours.loc(n), text)
            assert ours.raw(n) == (str(seg[n]) if n < len(seg) else "")
    msh = theirs.segment("MSH")
    if len(msh) > 7:
        msh[7] = msh.create_field([""])
    before = hmac.new(TEST_KEY, b"hrx-hl7-ack:" + str(theirs).encode(), hashlib.sha256).hexdigest()
    assert Hl7Receiver._digest(SimpleNamespace(pseudonymizer=SimpleNamespace(key=TEST_KEY)), message) == before

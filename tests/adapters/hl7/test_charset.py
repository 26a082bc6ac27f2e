"""MSH-18: declared, undeclared and mislabelled character sets."""
from __future__ import annotations

import pytest

from adapters.hl7 import charset_of, decode
from tests.adapters.hl7.hl7data import CHAOYANG, WUHAN_GBK, XUHUI, replace


@pytest.mark.parametrize("declared, codec", [
    ("UNICODE UTF-8", "utf-8"), ("UTF-8", "utf-8"), ("GB 18030-2000", "gb18030"), ("GB18030", "gb18030"),
    ("GBK", "gb18030"), ("GB2312", "gb18030"), ("CHINESE", "gb18030"), ("8859/1", "latin-1"), ("", None),
    ("ASCII", None),
])
def test_declared_character_sets(declared, codec) -> None:  # type: ignore[no-untyped-def]
    assert charset_of(declared) == codec


def test_undeclared_gbk_and_gb18030_messages_decode() -> None:
    undeclared = replace(WUHAN_GBK, "|CHN|GBK", "|CHN|", "gbk")
    assert decode(undeclared)[1] == "gb18030" and "李^建国" in decode(undeclared)[0]
    declared = replace(WUHAN_GBK, "|CHN|GBK", "|CHN|GB 18030-2000", "gbk")
    assert "白细胞计数" in decode(declared)[0]
    assert decode(XUHUI)[1] == "utf-8"  # undeclared, valid UTF-8
    mislabelled = replace(CHAOYANG, "UNICODE UTF-8", "GBK")  # UTF-8 bytes, declared GBK
    assert decode(mislabelled) == (decode(CHAOYANG)[0].replace("UNICODE UTF-8", "GBK"), "gb18030")

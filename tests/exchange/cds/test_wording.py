"""The language of CDS cards (Accept-Language, RFC 9110 §12.5.4) and the message file's completeness."""
from __future__ import annotations

import pytest

from exchange.cds.services import SERVICES
from exchange.cds.wording import language_of, text


@pytest.mark.parametrize(("header", "language"), [
    (None, "zh"), ("", "zh"), ("fr-FR", "zh"), ("en", "en"), ("en-US,en;q=0.9", "en"), ("zh-CN,en;q=0.5", "zh"),
    ("en;q=0.4, zh-Hans;q=0.8", "zh"), ("fr, en;q=0.7, zh;q=0.3", "en"), ("en;q=0, zh;q=0.1", "zh"),
    ("en;q=bad", "zh")])
def test_the_first_of_zh_and_en_by_quality(header: str | None, language: str) -> None:
    assert language_of(header) == language


def test_the_default_is_a_setting() -> None:
    assert language_of("de", default="en") == "en"


def test_every_service_has_its_wording_in_both_languages() -> None:
    for service in SERVICES.values():
        zh, en = service.discovery("zh"), service.discovery("en")
        assert zh["title"] != en["title"] and zh["description"] != en["description"]
    assert text("order_summary", "zh", item="葡萄糖").startswith("近期已有可互认结果")

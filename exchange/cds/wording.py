"""The wording of the CDS services and cards in Chinese and English (``exchange/cds/data/messages.csv``), and
the language a request asks for."""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from codes.sources import csv_rows

MESSAGES_FILE = Path(__file__).with_name("data") / "messages.csv"
LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"


@cache
def _messages() -> dict[str, dict[str, str]]:
    found = {row["key"]: {"zh": row["zh"], "en": row["en"]} for _, row in csv_rows(MESSAGES_FILE)}
    empty = [key for key, texts in found.items() if not all(texts.values())]
    if empty:
        raise ValueError(f"{MESSAGES_FILE}: messages without both languages: {', '.join(empty)}")
    return found


def text(key: str, language: str, **fields: Any) -> str:
    """Message ``key`` in ``language`` (``zh`` or ``en``), its placeholders filled."""
    return _messages()[key][language].format(**fields)


def language_of(accept_language: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """The language of the answer: the first of zh and en that ``Accept-Language`` (RFC 9110 §12.5.4) prefers,
    by quality; ``default`` when it names neither."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else default

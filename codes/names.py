"""Chinese item-name normalisation used to match published lists to unified items.

Rule: NFKC (full-width -> half-width letters, digits and brackets), lower case, drop whitespace and
most punctuation, unify Greek letters written out or as look-alikes, and treat all bracket styles
alike. Synonyms (谷丙转氨酶 = 丙氨酸氨基转移酶(ALT)) are data: ``aliases.csv``.
"""

from __future__ import annotations

import re
import unicodedata

_BRACKETS = str.maketrans({"（": "(", "）": ")", "【": "(", "】": ")", "[": "(", "]": ")", "〔": "(", "〕": ")", "｛": "(", "｝": ")"})
_DROP_RE = re.compile(r"[\s·•・,，、;；:：'\"“”‘’_\-—–－/／*＊.。★☆]+")
_GREEK = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "ɑ": "α", "ß": "β"}
_PAREN_RE = re.compile(r"\(([^()]*)\)")


def normalize_name(name: str) -> str:
    """Canonical form of an item name for matching (see module docstring)."""
    if not name:
        return ""
    text = unicodedata.normalize("NFKC", name).translate(_BRACKETS).lower()
    for word, letter in _GREEK.items():
        text = text.replace(word, letter)
    text = _DROP_RE.sub("", text)
    return text


def strip_parentheses(name: str) -> str:
    """The normalised name without any parenthesised part: 丙氨酸氨基转移酶(ALT) -> 丙氨酸氨基转移酶."""
    norm = normalize_name(name)
    prev = None
    while prev != norm:
        prev, norm = norm, _PAREN_RE.sub("", norm)
    return norm


def parenthesised(name: str) -> list[str]:
    """Normalised contents of parentheses (usually the abbreviation: ALT, HbA1c)."""
    norm = normalize_name(name)
    return [m for m in _PAREN_RE.findall(norm) if m]

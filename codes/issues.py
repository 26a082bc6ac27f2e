"""Why a code or a study did not map: a reason code and a message in Chinese and English.

Three reasons (the event's ``item.mapping_issue_code``):

- ``unknown_code``: no mapping row matches and the code is no known LOINC code (for a study: neither its
  procedure codes, its descriptions nor its shape);
- ``unit_not_convertible``: the code mapped, but the value's unit cannot be converted to the item's unit;
- ``ambiguous``: what was sent names several unified items and nothing says which one (a local code mapped
  per qualifier sent without one; a report whose own code is unmapped and whose observations map to several
  items).

The wording is data: ``codes/data/mapping_issues.csv`` (always the shipped file, like the reason codes).
"""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from codes.sources import csv_rows

MESSAGES_FILE = Path(__file__).resolve().parent / "data" / "mapping_issues.csv"
REASONS: tuple[str, ...] = ("unknown_code", "unit_not_convertible", "ambiguous")

#: The issue fields of a mapped item.
NO_ISSUE: dict[str, None] = {"mapping_issue": None, "mapping_issue_zh": None, "mapping_issue_code": None}


@cache
def _messages() -> dict[str, tuple[str, str, str]]:
    found = {row["key"]: (row["reason"], row["zh"], row["en"]) for _, row in csv_rows(MESSAGES_FILE)}
    missing = [r for r in REASONS if r not in found]
    unknown = sorted({reason for reason, _, _ in found.values()} - set(REASONS))
    if missing or unknown:
        raise ValueError(f"{MESSAGES_FILE}: reasons missing {missing}, unknown {unknown}")
    return found


def reason_title(reason: str | None) -> tuple[str, str]:
    """The heading of a reason in Chinese and English (a reason not known here is shown as it is)."""
    if reason is None:
        return "未说明原因", "reason not recorded"
    found = _messages().get(reason)
    return (found[1], found[2]) if found is not None and found[0] == reason else (reason, reason)


def issue(message: str, **fields: Any) -> dict[str, str]:
    """The event's issue fields for one message of ``mapping_issues.csv``, its placeholders filled."""
    reason, zh, en = _messages()[message]
    return {"mapping_issue": en.format(**fields)[:512], "mapping_issue_zh": zh.format(**fields)[:512],
            "mapping_issue_code": reason}

"""The event contract: JSON Schema files (draft 2020-12), language-neutral, one per event kind and version."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

NAMES = ("lab-result.v1", "imaging-result.v1", "dead-letter.v1", "decision.v1", "feedback.v1")


@cache
def load(name: str) -> dict[str, Any]:
    """The parsed schema ``name`` (e.g. ``"lab-result.v1"``)."""
    if name not in NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(NAMES)}")
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text("utf-8"))

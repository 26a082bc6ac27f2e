"""Catalogue coverage targets per tier: the items each tier's catalogues must reach, and by when.

The numbers are policy, so they are data: ``codes/data/coverage_targets.csv`` (always the shipped file, like
the mapping issues). The 2024 guidance (国卫医政发〔2024〕37号): every item inside an alliance and more than 200
per city by end-2025, more than 300 per province and more than 200 per region by end-2027.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

from codes.model import TIERS
from codes.sources import csv_rows

TARGETS_FILE = Path(__file__).resolve().parent / "data" / "coverage_targets.csv"


@dataclass(frozen=True)
class CoverageTarget:
    """``more_than`` items (None: no count), or ``all_items`` of the code book, by the end of ``due``."""

    tier: str
    more_than: int | None
    all_items: bool
    due: date
    source: str

    def met(self, total: int, items_total: int) -> bool | None:
        """Whether ``total`` items meet the target; None when the tier has no count target."""
        if self.all_items:
            return total >= items_total
        return total > self.more_than if self.more_than is not None else None

    def gap(self, total: int, items_total: int) -> int | None:
        """Items still missing (0 when met); None when the tier has no count target."""
        if self.all_items:
            return max(0, items_total - total)
        return max(0, self.more_than + 1 - total) if self.more_than is not None else None


@cache
def coverage_targets() -> dict[str, CoverageTarget]:
    """The targets by tier, one per tier of :data:`codes.model.TIERS`."""
    found: dict[str, CoverageTarget] = {}
    for line, row in csv_rows(TARGETS_FILE):
        tier = row["tier"]
        if tier not in TIERS or tier in found:
            raise ValueError(f"{TARGETS_FILE}:{line}: unknown or repeated tier {tier!r}")
        found[tier] = CoverageTarget(tier, int(row["more_than"]) if row["more_than"] else None,
                                     row["all_items"] == "yes", date.fromisoformat(row["due"]), row["source"])
    if missing := [t for t in TIERS if t not in found]:
        raise ValueError(f"{TARGETS_FILE}: no target for {missing}")
    return found

"""Physically possible values of a unified item (``item_bounds.csv``): the check every door's mapping step runs.

A value is checked once it is in the item's own unit, i.e. after the mapping's unit conversion: the bounds
are written in that unit. A value in any other unit is not comparable and is not checked here (the mapping
step already leaves such an observation unmapped). Bounds are physical (a concentration below 0, a
percentage above 100, a pH outside 0–14), never clinical: a value far outside its reference range is still
a measurement.
"""
from __future__ import annotations

from codes.book import CodeBook

_OPEN_BELOW = ("<", "<=")
_OPEN_ABOVE = (">", ">=")


def _number(value: float) -> str:
    return f"{value:.15g}"


def out_of_bounds(book: CodeBook, unified_code: str, value: float, unit: str | None,
                  comparator: str | None = None) -> str | None:
    """Why ``value`` (in ``unit``) cannot be a result of ``unified_code``, or None when it can (or is unchecked).

    With a comparator the value is a limit, and only what it claims is checked: ``<0`` claims a value below
    0 (impossible for a concentration) while ``<200`` for a percentage is possible; ``>100`` claims one
    above 100. Unchecked: items without bounds and values not in the item's unit.
    """
    bound = book.bounds.get(unified_code)
    if bound is None or unit != bound.unit:
        return None
    low, high = bound.min, bound.max
    shown = f"{comparator or ''}{_number(value)}{' ' + unit if unit else ''}"
    what = f"{unified_code} ({book.items[unified_code].name_zh})"
    if low is not None and comparator not in _OPEN_ABOVE:
        below = value <= low if comparator == "<" else value < low
        if below:
            return f"{shown} is impossible for {what}: the smallest possible value is {_number(low)}"
    if high is not None and comparator not in _OPEN_BELOW:
        above = value >= high if comparator == ">" else value > high
        if above:
            return f"{shown} is impossible for {what}: the largest possible value is {_number(high)}"
    return None

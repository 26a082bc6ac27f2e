"""Differential check: the fast validator (jsonschema-rs) never accepts an event that jsonschema rejects.

``python -m bench.validator_diff`` mutates valid lab and imaging events at every JSON path with hostile
values and compares verdicts. Used to justify the fast path in exchange/events.py; not timed.
"""
from __future__ import annotations

import copy
import random
import sys
from typing import Any

from bench.data import imaging_event, lab_event

NASTY: list[Any] = [None, "", "x", "x" * 70, "x" * 300, "x" * 5000, 0, -1, 1, 1.0, 1.5, 2**40, True, False, [], {},
                    [1], {"a": 1}, "abc\n", "ABC", "final", "male", "L0001", "L0001\n", "a" * 64, ("a" * 64) + "\n",
                    "0123abcd", "0123abcd\n", "2026-11-01T08:00:00+08:00", "2026-11-01T08:00:00+0800",
                    "2026-11-01 08:00:00Z", "2026-13-01T08:00:00Z", "2026-11-01T25:00:00Z", "2026-11-01T08:00:00",
                    "2026-11-01t08:00:00z", "2026-02-30T08:00:00Z", "2026-11-01T08:00:60Z", "20261101T080000Z",
                    "2026-11-01T08:00:00.123456789+08:00", "1.2.3", "1..2", "1.2.3\n",
                    "123e4567-e89b-12d3-a456-426614174000", "123e4567e89b12d3a456426614174000",
                    "{123e4567-e89b-12d3-a456-426614174000}", "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
                    "123E4567-E89B-12D3-A456-426614174000", "hr.lab-result.v1", "hr.imaging-result.v1", 1880, 2201,
                    65535, 65536, 500, float("inf"), "中文", "a-b", "-ab", "Ab"]


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, prefix + (i,))
    return out


def mutate(event: dict[str, Any], path: tuple, new: Any, delete: bool = False) -> dict[str, Any]:
    e = copy.deepcopy(event)
    node = e
    for p in path[:-1]:
        node = node[p]
    if delete:
        if isinstance(node, dict):
            node.pop(path[-1], None)
        else:
            node.pop(path[-1])
    else:
        node[path[-1]] = new
    return e


def run(samples: int = 3) -> tuple[int, list[str]]:
    from schemas import events

    fast_of = getattr(events, "_fast_validator", None)
    if fast_of is None:
        return 0, ["exchange.events has no fast validator"]
    checked, problems = 0, []
    rng = random.Random(6)
    bases = [("lab-result.v1", lab_event(i, rng)) for i in range(samples)]
    bases += [("imaging-result.v1", imaging_event(i, rng)) for i in range(samples)]
    for name, base in bases:
        fast, slow = fast_of(name), events.validator(name)
        candidates = []
        for path in paths(base):
            if not path:
                continue
            candidates.append(mutate(base, path, None, delete=True))
            candidates += [mutate(base, path, v) for v in NASTY]
            parent = base
            for p in path[:-1]:
                parent = parent[p]
            if isinstance(parent, dict):
                candidates.append(mutate(base, path[:-1] + ("extra_key",), 1))
        for candidate in candidates:
            checked += 1
            if fast(candidate) and not slow.is_valid(candidate):
                problems.append(f"{name}: fast accepts what jsonschema rejects: {candidate!r}"[:400])
    return checked, problems


if __name__ == "__main__":
    n, bad = run()
    print(f"{n} mutated events compared; {len(bad)} where the fast validator is more lenient")
    for line in bad[:20]:
        print(" ", line)
    sys.exit(1 if bad else 0)

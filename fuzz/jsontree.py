"""A structure-aware mutator for JSON inputs: most mutations edit the decoded tree, so that the FHIR harness
spends its time in the Bundle reader rather than in the JSON decoder's refusals.

libFuzzer calls it (atheris's ``custom_mutator``) instead of its own byte mutations. One in four mutations
is still libFuzzer's on the raw bytes: broken JSON is an input too, and the byte level finds what tree edits
cannot (odd escapes, duplicate keys, numbers out of range).
"""
from __future__ import annotations

import random
from typing import Any

import atheris
import orjson

#: Values a leaf may become: the boundaries of FHIR's types (integer, decimal, date, dateTime, instant).
INTERESTING = [None, True, False, 0, -1, 1, 2**31, -(2**31) - 1, 2**63, 1e308, -0.0, 0.5, "", " ", "0",
               "-1", "1e999", "2025", "2025-13-40", "2025-03-01T10:00:00", "2025-03-01T10:00:00+08:00",
               "2025-03-01T24:00:00Z", "9999-12-31T23:59:59.999999999+14:00", "\u0000", "\ud7ff", {}, []]


def _nodes(tree: Any, out: list[Any]) -> list[Any]:
    """Every container (object or array) of the tree, the tree itself first."""
    if isinstance(tree, dict | list):
        out.append(tree)
        for child in tree.values() if isinstance(tree, dict) else tree:
            _nodes(child, out)
    return out


def _strings(tree: Any, out: set[str]) -> set[str]:
    """Every key and string value of the tree: material for replacing one by another (a resource type, a
    reference, a code system)."""
    if isinstance(tree, dict):
        out.update(tree)
        for child in tree.values():
            _strings(child, out)
    elif isinstance(tree, list):
        for child in tree:
            _strings(child, out)
    elif isinstance(tree, str):
        out.add(tree)
    return out


def _leaf(value: Any, rng: random.Random, pool: list[str]) -> Any:
    choice = rng.randrange(4)
    if choice == 0 and isinstance(value, str):
        data = value.encode()
        return atheris.Mutate(data, len(data) + 16).decode("utf-8", errors="ignore")
    if choice == 1 and pool:
        return rng.choice(pool)
    if choice == 2 and isinstance(value, int | float) and not isinstance(value, bool):
        return rng.choice([value + 1, value - 1, -value, value * 1000, str(value)])
    return rng.choice(INTERESTING)


def mutate_tree(tree: Any, rng: random.Random) -> Any:
    """One edit of a decoded JSON document: a value changed, a member removed, renamed or copied, an array
    item removed or repeated. Returns the (possibly new) root."""
    containers = _nodes(tree, [])
    if not containers:
        return _leaf(tree, rng, [])
    pool = sorted(_strings(tree, set()))
    node = rng.choice(containers)
    operation = rng.randrange(5)
    if isinstance(node, dict):
        if not node:
            node[rng.choice(pool) if pool else ""] = rng.choice(INTERESTING)
            return tree
        key = rng.choice(list(node))
        if operation == 0:
            del node[key]
        elif operation == 1:
            node[_leaf(key, rng, pool) or key] = node.pop(key)
        elif operation == 2:
            node[key] = orjson.loads(orjson.dumps(rng.choice(containers)))  # a copy: never a cycle
        else:
            node[key] = _leaf(node[key], rng, pool)
        return tree
    if not node:
        node.append(rng.choice(INTERESTING))
        return tree
    index = rng.randrange(len(node))
    if operation == 0:
        del node[index]
    elif operation == 1:
        node.insert(index, orjson.loads(orjson.dumps(node[index])))
    else:
        node[index] = _leaf(node[index], rng, pool)
    return tree


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    """atheris's ``custom_mutator``: a tree edit of a JSON input (three times in four), else a byte mutation."""
    rng = random.Random(seed)
    if rng.randrange(4):
        try:
            tree = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            try:
                out = orjson.dumps(mutate_tree(tree, rng))
            except orjson.JSONEncodeError:  # an integer grown past 64 bits
                out = b""
            if out and len(out) <= max_size:
                return out
    return atheris.Mutate(data, max_size)

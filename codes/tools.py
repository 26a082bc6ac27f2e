"""Catalogue tools behind ``hrx catalogue``: validate, coverage, diff (import lives in importer.py).

Each returns plain data (dataclasses / lists) so the CLI, the HTTP API and tests share one rule.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

from codes.book import CodeBook, default_codes_dir
from codes.calendar import BEIJING
from codes.loader import (
    Data, check_catalogue_versions, load_dir, load_imaging_mapping_table, load_mapping_table, parse_catalogue,
)
from codes.model import Catalogue, Problem, TIERS
from codes.targets import coverage_targets



def _find_data_root(path: Path) -> Path | None:
    for parent in [path] + list(path.parents):
        if (parent / "items.csv").exists():
            return parent
    return None


def _reference(reference: str | os.PathLike[str] | None, hint: Path | None) -> tuple[Data, list[Problem]]:
    root = Path(reference) if reference is not None else (_find_data_root(hint) if hint else None) or default_codes_dir()
    return load_dir(root)


def validate(paths: Sequence[str | os.PathLike[str]], reference: str | os.PathLike[str] | None = None) -> list[Problem]:
    """Every problem in the given paths, with file and line.

    A directory holding ``items.csv`` is validated as a whole code data set. A catalogue YAML file
    (or a directory of them) is checked against a reference data set — ``reference``, else the data
    directory the file lives in, else $HRX_CODES_DIR / the shipped data — including overlaps with the
    reference's other versions of the same catalogue id. A CSV under ``mappings/<institution>/`` is
    checked as a lab mapping table, one under ``imaging_mappings/<institution>/`` as an imaging mapping table.
    """
    problems: list[Problem] = []
    extra_catalogues: list[Catalogue] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            problems.append(Problem(str(path), 0, "no such file or directory"))
            continue
        if path.is_dir() and (path / "items.csv").exists():
            problems.extend(load_dir(path)[1])
            continue
        data, _ = _reference(reference, path.resolve())
        files = sorted(list(path.rglob("*.yaml")) + list(path.rglob("*.yml")) + list(path.rglob("*.csv"))) if path.is_dir() else [path]
        for f in files:
            if f.suffix in (".yaml", ".yml"):
                cat = parse_catalogue(f, data, problems)
                if cat is not None:
                    extra_catalogues.append(cat)
                    # compare with the reference's versions of the same id, except this very file
                    others = [c for c in data.catalogues if c.id == cat.id and Path(c.source).resolve() != f.resolve()]
                    check_catalogue_versions(others + [cat], problems)
            elif f.suffix == ".csv" and f.parent.parent.name in ("mappings", "imaging_mappings"):
                if f.parent.name not in data.institutions:
                    problems.append(Problem(str(f), 0, f"unknown institution {f.parent.name!r}"))
                elif f.parent.parent.name == "mappings":
                    load_mapping_table(f, f.parent.name, data, problems)
                else:
                    load_imaging_mapping_table(f, f.parent.name, data, problems)
            else:
                problems.append(Problem(str(f), 0, "not a catalogue (.yaml) or mapping table; pass the data directory to check everything"))
    if len(extra_catalogues) > 1:
        check_catalogue_versions(extra_catalogues, problems)
    return sorted(set(problems), key=lambda p: (p.file, p.line, p.message))


@dataclass(frozen=True)
class CoverageRow:
    """Items recognised in one tier/scope at a moment, against the tier's target (codes/data/coverage_targets.csv):
    ``meets`` None for a tier without a count target, ``gap`` the items still missing, ``due`` its deadline."""

    tier: str
    scope: str
    scope_name: str
    catalogues: tuple[str, ...]
    lab: int
    exam: int
    total: int
    target: str
    meets: bool | None
    gap: int | None = None
    due: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        d = asdict(self)
        d["catalogues"] = list(self.catalogues)
        return d


def scope_name(book: CodeBook, tier: str, scope: str) -> str:
    """Human name of a catalogue scope (alliance, division, region)."""
    if tier == "alliance":
        a = book.alliances.get(scope)
        return a.name_zh if a else scope
    if tier == "region":
        r = book.regions.get(scope)
        return r.name_zh if r else scope
    if tier == "national":
        return "全国"
    return book.divisions.get(scope, (scope, ""))[0]


def coverage(book: CodeBook, at: datetime | None = None) -> list[CoverageRow]:
    """Items per tier and scope in force at ``at`` (default now), against the tiers' targets.

    Catalogues of the same tier and scope are unioned. Alliance target: every item of the code book.
    """
    at = at or datetime.now(BEIJING)
    if at.tzinfo is None:
        at = at.replace(tzinfo=BEIJING)
    groups: dict[tuple[str, str], list[Catalogue]] = {}
    for cat in book.catalogues_in_force(at):
        groups.setdefault((cat.tier, cat.scope), []).append(cat)
    rows: list[CoverageRow] = []
    total_items = len(book.items)
    for (tier, scope), cats in groups.items():
        codes = set().union(*(c.items.keys() for c in cats))
        lab = sum(1 for c in codes if book.items[c].is_lab)
        goal = coverage_targets()[tier]
        target = (f"全部 {total_items} 项" if goal.all_items else f"> {goal.more_than}" if goal.more_than is not None
                  else "-")
        rows.append(CoverageRow(tier, scope, scope_name(book, tier, scope), tuple(sorted(c.id for c in cats)),
                                lab, len(codes) - lab, len(codes), target, goal.met(len(codes), total_items),
                                goal.gap(len(codes), total_items), goal.due.isoformat()))
    rows.sort(key=lambda r: (TIERS.index(r.tier), r.scope))
    return rows


@dataclass(frozen=True)
class ItemChange:
    """One changed field of an item present in both versions."""

    code: str
    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class CatalogueDiff:
    """Differences between two catalogue versions."""

    old: str
    new: str
    header: tuple[tuple[str, Any, Any], ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[ItemChange, ...]
    problems: tuple[Problem, ...] = field(default=())

    @property
    def empty(self) -> bool:
        """True when nothing differs."""
        return not (self.header or self.added or self.removed or self.changed)


def diff(old_path: str | os.PathLike[str], new_path: str | os.PathLike[str],
         reference: str | os.PathLike[str] | None = None) -> CatalogueDiff:
    """Added, removed and changed items (valid_days, qc_level, note) plus changed header fields.

    Both files are resolved against the reference data (see :func:`validate`), so ``all_items``
    catalogues compare item by item.
    """
    old_p, new_p = Path(old_path), Path(new_path)
    data, _ = _reference(reference, new_p.resolve())
    problems: list[Problem] = []
    old = parse_catalogue(old_p, data, problems)
    new = parse_catalogue(new_p, data, problems)
    if old is None or new is None:
        return CatalogueDiff(str(old_p), str(new_p), (), (), (), (), tuple(problems))
    header = []
    for name in ("id", "tier", "scope", "authority", "version", "effective_from", "effective_to", "qc_level",
                 "waive_qc", "all_items", "default_valid_days", "grade_overlays"):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            header.append((name, _plain(a), _plain(b)))
    added = tuple(sorted(set(new.items) - set(old.items)))
    removed = tuple(sorted(set(old.items) - set(new.items)))
    changed = []
    for code in sorted(set(old.items) & set(new.items)):
        a, b = old.items[code], new.items[code]
        for name in ("valid_days", "qc_level", "note"):
            if getattr(a, name) != getattr(b, name):
                changed.append(ItemChange(code, name, getattr(a, name), getattr(b, name)))
    return CatalogueDiff(str(old_p), str(new_p), tuple(header), added, removed, tuple(changed), tuple(problems))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (tuple, frozenset, set)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in asdict(value).items()}
    return value


def diff_as_dict(d: CatalogueDiff, book: CodeBook | None = None) -> dict[str, Any]:
    """JSON-friendly form of a diff (names added when a book is given)."""
    def name(code: str) -> str | None:
        return book.items[code].name_zh if book is not None and code in book.items else None
    return {
        "old": d.old, "new": d.new,
        "header": [{"field": f, "old": a, "new": b} for f, a, b in d.header],
        "added": [{"code": c, "name_zh": name(c)} for c in d.added],
        "removed": [{"code": c, "name_zh": name(c)} for c in d.removed],
        "changed": [{"code": c.code, "name_zh": name(c.code), "field": c.field, "old": c.old, "new": c.new} for c in d.changed],
        "problems": [str(p) for p in d.problems],
    }


def iter_problems_text(problems: Iterable[Problem]) -> Iterable[str]:
    """``file:line: message`` lines."""
    return (str(p) for p in problems)

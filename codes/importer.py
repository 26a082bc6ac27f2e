"""Turn a health commission's published list (CSV in GBK or UTF-8, or an Excel .xlsx) into a catalogue YAML.

Matching rule, per row: a unified code column wins when present and valid; otherwise the item name
is matched exactly against ``name_zh``, then in normalised form (full/half width, spaces,
punctuation, bracket style — see :mod:`codes.names`) against names and ``aliases.csv``, then
without its parenthesised part, then by the parenthesised abbreviation (ALT, HbA1c). A row matches
only when exactly one item fits. Every row that is not turned into a catalogue item — no match,
ambiguous, duplicate, unreadable validity, section heading — is reported with its line number.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import NamedTuple

from codes.book import SHIPPED_READ_ONLY, CodeBook, is_shipped, load_codebook
from codes.calendar import beijing_now
from codes.model import TIERS, CodeError
from codes.names import normalize_name, parenthesised, strip_parentheses
from codes.sources import read_text_any, xlsx_as_csv

NAME_COLUMNS = ("项目名称", "检验项目名称", "检查项目名称", "检查检验项目名称", "互认项目名称", "检验项目", "检查项目",
                "项目", "名称", "name_zh", "name", "item")
CODE_COLUMNS = ("统一编码", "互认编码", "检验互认编码", "项目编码", "unified_code", "code")
DAYS_COLUMNS = ("互认时限", "互认有效期", "有效期", "时限", "有效天数", "valid_days")
NOTE_COLUMNS = ("备注", "说明", "note")
_HEADING_RE = re.compile(r"^[一二三四五六七八九十百]+[、.．]|^第[一二三四五六七八九十]+[部类章]")
_DAYS_RE = re.compile(r"(\d+)\s*(天|日|d|day|days|周|个月|月|年)?", re.IGNORECASE)


@dataclass(frozen=True)
class UnmatchedRow:
    """A row of the published list that did not become a catalogue item, and why."""

    line: int
    name: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.name}: {self.reason}"


class ImportResult(NamedTuple):
    """``(yaml_text, unmatched)``; unpacks like a pair."""

    yaml_text: str
    unmatched: list[UnmatchedRow]


def parse_days(text: str) -> int | None:
    """'7' / '7天' / '2周' / '3个月' / '1年' -> days; None when unreadable."""
    m = _DAYS_RE.search(text)
    if not m:
        return None
    n, unit = int(m.group(1)), (m.group(2) or "天")
    mult = {"周": 7, "个月": 30, "月": 30, "年": 365}.get(unit, 1)
    return n * mult if n > 0 else None


def _find_column(header: list[str], candidates: tuple[str, ...], min_contained: int = 2) -> int | None:
    norm = [normalize_name(h) for h in header]
    for cand in candidates:
        c = normalize_name(cand)
        if c in norm:
            return norm.index(c)
    for cand in candidates:  # "互认时限(天)" contains "互认时限"; short words like 项目 must match exactly
        c = normalize_name(cand)
        if len(c) < min_contained:
            continue
        for i, h in enumerate(norm):
            if h and c in h:
                return i
    return None


class NameIndex:
    """Look-up tables from normalised names to unified codes (built once per code book)."""

    def __init__(self, book: CodeBook) -> None:
        self.exact: dict[str, str] = {i.name_zh: i.code for i in book.items.values()}
        self.norm: dict[str, set[str]] = {}
        self.stripped: dict[str, set[str]] = {}
        self.abbr: dict[str, set[str]] = {}
        for item in book.items.values():
            self.norm.setdefault(normalize_name(item.name_zh), set()).add(item.code)
            self.stripped.setdefault(strip_parentheses(item.name_zh), set()).add(item.code)
            for a in parenthesised(item.name_zh):
                self.abbr.setdefault(a, set()).add(item.code)
        for alias, code in book.aliases.items():
            self.norm.setdefault(alias, set()).add(code)
            self.stripped.setdefault(strip_parentheses(alias), set()).add(code)

    def match(self, name: str) -> tuple[str | None, str]:
        """(code, '') on a unique match, else (None, reason)."""
        if name in self.exact:
            return self.exact[name], ""
        norm = normalize_name(name)
        for table, key in ((self.norm, norm), (self.stripped, strip_parentheses(name)), (self.norm, strip_parentheses(name))):
            hits = table.get(key, set())
            if len(hits) == 1:
                return next(iter(hits)), ""
            if len(hits) > 1:
                return None, f"ambiguous: matches {', '.join(sorted(hits))}"
        abbr_hits: set[str] = set()
        for a in parenthesised(name):
            abbr_hits |= self.abbr.get(a, set()) | self.norm.get(a, set())
        if len(abbr_hits) == 1:
            return next(iter(abbr_hits)), ""
        if len(abbr_hits) > 1:
            return None, f"ambiguous abbreviation: matches {', '.join(sorted(abbr_hits))}"
        return None, "no unified item with this name (add it to aliases.csv or items.csv)"


def import_published(
    csv_path: str | os.PathLike[str],
    tier: str,
    scope: str,
    book: CodeBook | None = None,
    *,
    catalogue_id: str | None = None,
    authority: str = "",
    version: str | None = None,
    effective_from: date | None = None,
    default_valid_days: int = 30,
    name_zh: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import a published list; returns the catalogue YAML text and every row not imported.

    The CSV may be UTF-8 (with or without BOM) or GBK/GB18030; a ``.xlsx`` file is read from its first sheet
    (line numbers are its row numbers). The header row is the first row
    with a recognisable item-name column (项目名称, 检验项目, 名称, ...); optional columns: unified
    code (统一编码/互认编码), validity (互认时限/有效期, e.g. "7天", "3个月"), note (备注).
    """
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}")
    book = book or load_codebook()
    path = Path(csv_path)
    text, encoding = (xlsx_as_csv(path), "xlsx") if path.suffix.lower() == ".xlsx" else read_text_any(path)
    reader = csv.reader(io.StringIO(text))
    index = NameIndex(book)
    unmatched: list[UnmatchedRow] = []
    header: list[str] | None = None
    name_col = code_col = days_col = note_col = None
    entries: list[dict[str, object]] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if progress is not None:  # one per row read (a file of n lines has at most n rows)
            progress(1)
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if header is None:
            # a header names at least two columns; a one-cell title row above it never qualifies
            name_col = _find_column(cells, NAME_COLUMNS, 4) if sum(1 for c in cells if c) >= 2 else None
            if name_col is None:
                unmatched.append(UnmatchedRow(line, " ".join(c for c in cells if c)[:40],
                                              "before the header row (no item-name column)"))
                continue
            header = cells
            code_col = _find_column(cells, CODE_COLUMNS)
            days_col = _find_column(cells, DAYS_COLUMNS)
            note_col = _find_column(cells, NOTE_COLUMNS)
            continue
        name = cells[name_col] if name_col is not None and name_col < len(cells) else ""
        filled = [c for c in cells if c]
        if len(filled) == 1 and _HEADING_RE.match(filled[0]):
            unmatched.append(UnmatchedRow(line, filled[0], "section heading, not an item"))
            continue
        if not name:
            unmatched.append(UnmatchedRow(line, " ".join(filled)[:40], "empty item name"))
            continue
        code = None
        raw_code = cells[code_col] if code_col is not None and code_col < len(cells) else ""
        if raw_code and raw_code in book.items:
            code = raw_code
        else:
            code, reason = index.match(name)
            if code is None:
                unmatched.append(UnmatchedRow(line, name, reason))
                continue
        if code in seen:
            unmatched.append(UnmatchedRow(line, name, f"duplicate of line {seen[code]} ({code})"))
            continue
        days = default_valid_days
        raw_days = cells[days_col] if days_col is not None and days_col < len(cells) else ""
        if raw_days:
            parsed = parse_days(raw_days)
            if parsed is None:
                unmatched.append(UnmatchedRow(line, name, f"cannot read validity {raw_days!r}"))
                continue
            days = parsed
        seen[code] = line
        entry: dict[str, object] = {"code": code, "valid_days": days}
        note = cells[note_col] if note_col is not None and note_col < len(cells) else ""
        source_note = f"原名: {name}" if name != book.items[code].name_zh else ""
        joined = "; ".join(x for x in (note, source_note) if x)
        if joined:
            entry["note"] = joined
        entries.append(entry)
    if header is None:
        unmatched.append(UnmatchedRow(0, path.name, "no header row with an item-name column (项目名称/名称/...)"))
    yaml_text = _render(path, encoding, tier, scope, catalogue_id or f"{tier}-{scope}", authority, version or str(beijing_now().year),
                        effective_from or beijing_now().date(), default_valid_days, name_zh, entries, len(unmatched))
    return ImportResult(yaml_text, unmatched)


def _q(value: object) -> str:
    """A YAML-safe flow scalar (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _render(path: Path, encoding: str, tier: str, scope: str, cid: str, authority: str, version: str,
            effective_from: date, default_days: int, name_zh: str | None, entries: list[dict[str, object]], n_unmatched: int) -> str:
    lines = [
        f"# Imported by `hrx catalogue import` from {path.name} ({encoding}): {len(entries)} item(s), {n_unmatched} row(s) not imported.",
        "# Review the notes (原名) and the reported rows, then run `hrx catalogue validate` on this file.",
        f"id: {_q(cid)}",
    ]
    if name_zh:
        lines.append(f"name_zh: {_q(name_zh)}")
    lines += [
        f"tier: {tier}",
        f"scope: {_q(scope)}",
        f"authority: {_q(authority or '待填写')}",
        f"version: {_q(version)}",
        f"effective_from: {effective_from.isoformat()}",
        "effective_to: null",
        f"default_valid_days: {default_days}",
        "items:",
    ]
    for e in entries:
        parts = [f"code: {e['code']}", f"valid_days: {e['valid_days']}"]
        if "note" in e:
            parts.append(f"note: {_q(e['note'])}")
        lines.append("  - {" + ", ".join(parts) + "}")
    return "\n".join(lines) + "\n"


class CatalogueRefused(Exception):
    """An imported catalogue version that cannot be added: every problem, ``conflict`` when it collides with
    what the directory holds (a file of that name, the shipped demo data)."""

    def __init__(self, message: str, problems: list[str] | None = None, *, conflict: bool = False) -> None:
        super().__init__(message)
        self.message, self.problems, self.conflict = message, problems or [], conflict


def add_catalogue_version(book: CodeBook, yaml_text: str) -> tuple[Path, CodeBook]:
    """Put an imported catalogue version (``ImportResult.yaml_text``) into ``book.root``'s ``catalogues/`` as
    ``<id>-<version>.yaml``, checked first as ``hrx catalogue validate`` checks one file (items, scope, overlap
    with the other versions of its id), and return the directory loaded again. Nothing is left behind when
    anything is refused (:class:`CatalogueRefused`)."""
    from codes.mapping_tables import fsync_dir
    from codes.sources import load_yaml
    from codes.tools import validate

    root = Path(book.root)
    if is_shipped(root):
        raise CatalogueRefused(SHIPPED_READ_ONLY, conflict=True)
    folder = root / "catalogues"
    folder.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / "imported.yaml"
        staged.write_text(yaml_text, "utf-8")
        problems = validate([staged], reference=root)
        if problems:
            raise CatalogueRefused("the imported catalogue does not validate",
                                   [f"line {p.line}: {p.message}" for p in problems])
        doc = load_yaml(staged)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{doc['id']}-{doc['version']}") + ".yaml"
        target = folder / name
        with open(staged, "rb") as f:
            os.fsync(f.fileno())
        try:
            with open(target, "xb") as out:  # never over another file
                out.write(staged.read_bytes())
                os.fsync(out.fileno())
        except FileExistsError:
            raise CatalogueRefused(f"catalogues/{name} exists already", conflict=True) from None
    fsync_dir(folder)
    try:
        return target, load_codebook(root)
    except CodeError as exc:
        target.unlink(missing_ok=True)
        raise CatalogueRefused("the code directory does not load with this catalogue",
                               [str(p) for p in exc.problems[:20]]) from None

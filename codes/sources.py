"""Reading operator files with line numbers: YAML (mappings carry ``__line__``) and CSV rows.

Validation must point at ``file:line``, so every YAML mapping is annotated with the line it starts
on and the line of each key, and duplicate keys (which PyYAML silently collapses) are recorded.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any, Iterator

import yaml

LINE = "__line__"
KEY_LINES = "__keylines__"
DUP_KEYS = "__dupkeys__"


class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader whose mappings remember where they are in the file. libyaml's parser when PyYAML has it
    (the pure-Python one made every load of the shipped catalogues take about a second)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict[str, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    key_lines: dict[Any, int] = {}
    dups: list[tuple[Any, int]] = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        if key in result:
            dups.append((key, key_node.start_mark.line + 1))
        result[key] = value
        key_lines[key] = key_node.start_mark.line + 1
    result[LINE] = node.start_mark.line + 1
    result[KEY_LINES] = key_lines
    if dups:
        result[DUP_KEYS] = dups
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class SourceError(Exception):
    """A file could not be read or parsed at all (reported with its line)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; mappings get ``__line__``/``__keylines__``. Raises SourceError."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(0, f"not UTF-8: {exc}") from exc
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise SourceError(line, f"YAML syntax error: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise SourceError(0, f"YAML error: {exc}") from exc


def line_of(node: Any, key: str | None = None) -> int:
    """Line of a mapping (or of one of its keys), 0 when unknown."""
    if isinstance(node, dict):
        if key is not None and key in node.get(KEY_LINES, {}):
            return int(node[KEY_LINES][key])
        return int(node.get(LINE, 0))
    return 0


def clean(node: Any) -> Any:
    """Drop the line annotations (for diffing or dumping)."""
    if isinstance(node, dict):
        return {k: clean(v) for k, v in node.items() if k not in (LINE, KEY_LINES, DUP_KEYS)}
    if isinstance(node, list):
        return [clean(v) for v in node]
    return node


def read_text_any(path: Path, encodings: tuple[str, ...] = ("utf-8-sig", "gb18030")) -> tuple[str, str]:
    """Read a text file trying UTF-8 (with or without BOM) then GB18030 (a superset of GBK)."""
    data = path.read_bytes()
    for enc in encodings:
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError:
            continue
    raise SourceError(0, f"cannot decode as {' or '.join(encodings)}")


def xlsx_as_csv(path: Path) -> str:
    """The first sheet of an Excel workbook (.xlsx) as CSV text, one line per sheet row, so that line numbers
    are the sheet's row numbers (a line break inside a cell becomes a space; a whole number stays one: 7, not
    7.0). Raises SourceError for a file that is not a workbook."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SourceError(0, f"not an Excel workbook (.xlsx): {exc}") from None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    try:
        for row in book.worksheets[0].iter_rows(values_only=True):
            cells = ["" if v is None else str(int(v)) if isinstance(v, float) and v.is_integer()
                     else " ".join(str(v).splitlines()) for v in row]
            while cells and not cells[-1]:  # a sheet's rows are as wide as its widest one
                cells.pop()
            writer.writerow(cells)
    finally:
        book.close()
    return out.getvalue()


def csv_rows(path: Path, text: str | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, row)`` for each data row of a CSV with a header; blank lines and lines
    starting with ``#`` are skipped. Values are stripped; missing cells become ''."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SourceError(0, f"not UTF-8: {exc}") from exc
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1)]
    body = [(i, ln) for i, ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not body:
        return
    header_line, header = body[0]
    fields = [h.strip() for h in next(csv.reader([header]))]
    for lineno, ln in body[1:]:
        values = next(csv.reader(io.StringIO(ln)), [])
        row = {f: (values[i].strip() if i < len(values) else "") for i, f in enumerate(fields)}
        if len(values) > len(fields):
            row["__extra__"] = ",".join(values[len(fields):])
        yield lineno, row


def csv_header(path: Path, text: str | None = None) -> list[str]:
    """The header fields of a CSV file (first non-comment, non-blank line)."""
    if text is None:
        text = path.read_text(encoding="utf-8-sig")
    for ln in text.splitlines():
        if ln.strip() and not ln.lstrip().startswith("#"):
            return [h.strip() for h in next(csv.reader([ln]))]
    return []

"""Reading an export file into a table: encoding, delimiter, header row, data rows with their line numbers.

- Encoding ``auto``: a byte order mark, else strict UTF-8, else GB18030 (a superset of GBK and GB2312, so
  every GBK export decodes).
- Delimiter ``auto``: the header row is looked for in the first lines of the file under comma, tab,
  semicolon and bar; the delimiter under which the header yields the most profile columns wins (more
  reliable than ``csv.Sniffer`` on short Chinese headers).
- Line numbers are physical lines, counted from 1, of the line each record starts on (a quoted cell may
  span lines); blank lines are skipped but still counted.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from adapters.csv.profile import DELIMITERS, REQUIRED, Profile, encoding_name, lookup_key

#: The delimiters ``auto`` tries, in order of preference when two match equally well.
AUTO_DELIMITERS = (",", "\t", ";", "|")
DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "bar"}


class CsvFileError(ValueError):
    """The file as a whole cannot be read (encoding, header); ``line`` is where the problem is."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class Table:
    """A decoded file: the header, the data rows with their first physical line, and the column of each field."""

    header: list[str]
    header_line: int
    rows: list[tuple[int, list[str]]]
    columns: dict[str, int]
    encoding: str
    delimiter: str


def decode_bytes(data: bytes, encoding: str = "auto") -> tuple[str, str]:
    """The text and the encoding used; 'auto' tries a BOM, then strict UTF-8, then GB18030."""
    def failed(exc: UnicodeDecodeError, name: str) -> CsvFileError:
        line = data[:exc.start].count(b"\n") + 1
        hint = " (try --encoding gb18030)" if name in ("gbk", "gb2312", "cp936") else ""
        return CsvFileError(f"the file is not valid {name} text at byte {exc.start}{hint}", line)

    if encoding == "auto":
        for bom, name in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
            if data.startswith(bom):
                try:
                    return data.decode(name), name
                except UnicodeDecodeError as exc:
                    raise failed(exc, name) from None
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
        try:
            return data.decode("gb18030"), "gb18030"
        except UnicodeDecodeError as exc:
            raise failed(exc, "UTF-8 or GB18030") from None
    name = encoding_name(encoding)
    try:
        text = data.decode(name)
    except UnicodeDecodeError as exc:
        raise failed(exc, name) from None
    return text.removeprefix("\ufeff"), name


def _records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the physical line each one starts on (quoted cells may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=False)
    previous = 0
    try:
        for cells in reader:
            yield previous + 1, cells
            previous = reader.line_num
    except csv.Error as exc:
        raise CsvFileError(f"malformed CSV: {exc}", previous + 1) from None


def _match_header(cells: Sequence[str], profile: Profile) -> dict[str, int]:
    """Field → column index for the profile's fields found among ``cells`` (the first matching header wins)."""
    index: dict[str, int] = {}
    for i, cell in enumerate(cells):
        index.setdefault(lookup_key(cell.replace("\ufeff", "")), i)
    found = {}
    for name, headers in profile.columns.items():
        for header in headers:
            if lookup_key(header) in index:
                found[name] = index[lookup_key(header)]
                break
    return found


def read_table(data: bytes, profile: Profile, encoding: str | None = None, delimiter: str | None = None) -> Table:
    """Decode, find the header row (and the delimiter) and split the rest into rows; raise CsvFileError."""
    text, used = decode_bytes(data, encoding or profile.encoding)
    wanted = DELIMITERS.get(delimiter or profile.delimiter)
    if wanted is None:
        raise CsvFileError(f"unknown delimiter {delimiter!r}: use comma, tab, semicolon, bar or auto")
    candidates = AUTO_DELIMITERS if wanted == "auto" else (wanted,)
    best: tuple[int, int, dict[str, int]] = (0, 1, {})  # (columns matched, line, columns): for the error
    chosen: tuple[int, str, dict[str, int]] | None = None
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if number > profile.header_search_lines:
            break
        tries = [(d, _match_header(next(csv.reader([line.rstrip("\r\n")], delimiter=d), []), profile))
                 for d in candidates]
        d, found = max(tries, key=lambda t: len(t[1]))  # ties: the earlier candidate (comma before tab)
        if len(found) > best[0]:
            best = (len(found), number, found)
        if all(f in found for f in REQUIRED):
            chosen = (number, d, found)
            break
    if chosen is None:
        missing = [f"{f} ({'/'.join(profile.columns[f])})" for f in REQUIRED if f not in best[2]]
        raise CsvFileError(f"no header row of profile {profile.name} in the first {profile.header_search_lines} "
                           f"line(s): missing column(s) {', '.join(missing)}", best[1])
    header_line, sep, columns = chosen
    if "status" not in columns and profile.default_status is None:
        raise CsvFileError(f"no status column ({'/'.join(profile.columns.get('status', ()))}) and the profile "
                           "has no default_status", header_line)
    header: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    for number, cells in _records(text, sep):
        if number < header_line:
            continue
        if number == header_line:
            header = cells
            continue
        if not any(c.strip() for c in cells):
            continue  # blank line
        rows.append((number, cells))
    return Table(header, header_line, rows, columns, used, sep)

"""Reading an export file: encoding, delimiter, header row, then its data rows one at a time with their line
numbers.

- Encoding ``auto``: a byte order mark, else strict UTF-8, else GB18030 (a superset of GBK and GB2312, so
  every GBK export decodes). The whole file is checked before any row is read, a chunk at a time, so an
  undecodable byte refuses the file and names its line.
- Delimiter ``auto``: the header row is looked for in the first lines of the file under comma, tab,
  semicolon and bar; the delimiter under which the header yields the most profile columns wins (more
  reliable than ``csv.Sniffer`` on short Chinese headers).
- NUL characters: a header row holding one refuses the file (an export with NULs is usually a binary file or
  UTF-16 text read as something else); in a data row it makes that row bad (:mod:`adapters.csv.rows`).
- Line numbers are physical lines, counted from 1, of the line each record starts on (a quoted cell may
  span lines); blank lines are skipped but still counted.
- Rows are read from the file as they are needed (:meth:`Table.records`), never held all at once.
"""
from __future__ import annotations

import codecs
import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from adapters.csv.profile import DELIMITERS, REQUIRED, Profile, encoding_name, lookup_key

#: The delimiters ``auto`` tries, in order of preference when two match equally well.
AUTO_DELIMITERS = (",", "\t", ";", "|")
DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "bar"}
#: Bytes read at a time while checking the encoding.
CHUNK_BYTES = 1 << 16
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


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
    """A decoded export file: its header, the column of each field, its encoding and delimiter; its data rows
    are read from ``path`` by :meth:`records`, each time anew."""

    path: Path
    header: list[str]
    header_line: int
    columns: dict[str, int]
    encoding: str
    delimiter: str

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """The non-blank data rows after the header, with the physical line each starts on; CsvFileError for
        malformed CSV."""
        for number, cells in _records(_lines(self.path, self.encoding), self.delimiter):
            if number > self.header_line and any(c.strip() for c in cells):
                yield number, cells


def _open(path: Path, mode: str = "rb", encoding: str | None = None) -> IO[Any]:
    """``open`` with CsvFileError for a file that cannot be opened (gone between two readings, unreadable)."""
    try:
        return open(path, mode, encoding=encoding, newline="" if encoding else None)
    except OSError as exc:
        raise CsvFileError(f"cannot read the file: {exc.strerror or exc}") from None


def _undecodable(path: Path, name: str) -> tuple[int, int] | None:
    """(byte offset, line) of the first byte of ``path`` that is not ``name`` text, or None when it all is."""
    decoder = codecs.getincrementaldecoder(name)("strict")
    offset = newlines = 0
    with _open(path) as stream:
        while True:
            chunk = stream.read(CHUNK_BYTES)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # exc.object is the decoder's pending bytes followed by this chunk
                start = offset + len(chunk) - len(exc.object) + exc.start
                return start, newlines + chunk[:max(0, start - offset)].count(b"\n") + 1
            if not chunk:
                return None
            offset += len(chunk)
            newlines += chunk.count(b"\n")


def detect_encoding(path: Path, encoding: str = "auto") -> str:
    """The codec ``path`` is read with, once every byte of it decoded; 'auto' tries a BOM, then strict UTF-8,
    then GB18030. CsvFileError naming the line of the first undecodable byte."""
    def failed(where: tuple[int, int], name: str) -> CsvFileError:
        hint = " (try --encoding gb18030)" if name in ("gbk", "gb2312", "cp936") else ""
        return CsvFileError(f"the file is not valid {name} text at byte {where[0]}{hint}", where[1])

    if encoding == "auto":
        with _open(path) as stream:
            start = stream.read(3)
        for bom, name in _BOMS:
            if start.startswith(bom):
                where = _undecodable(path, name)
                if where:
                    raise failed(where, name)
                return name
        if _undecodable(path, "utf-8") is None:
            return "utf-8"
        where = _undecodable(path, "gb18030")
        if where:
            raise failed(where, "UTF-8 or GB18030")
        return "gb18030"
    name = encoding_name(encoding)
    where = _undecodable(path, name)
    if where:
        raise failed(where, name)
    return name


def _lines(path: Path, encoding: str) -> Iterator[str]:
    """The text lines of ``path`` with their line ends (any of LF, CR LF, CR), a leading BOM removed."""
    with _open(path, "r", encoding) as text:
        first = next(text, None)
        if first is None:
            return
        yield first.removeprefix("\ufeff")
        yield from text


def _records(lines: Iterable[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the physical line each one starts on (quoted cells may span lines)."""
    reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=False)
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


def _nul_in_header(line: int) -> CsvFileError:
    return CsvFileError("the header row contains NUL characters: not a text export (a binary file, or UTF-16 "
                        "text without a byte order mark? try --encoding utf-16)", line)


def read_table(path: Path | str, profile: Profile, encoding: str | None = None,
               delimiter: str | None = None) -> Table:
    """Check the encoding, find the header row (and the delimiter); raise CsvFileError. The data rows are read
    later, by :meth:`Table.records`."""
    path = Path(path)
    used = detect_encoding(path, encoding or profile.encoding)
    wanted = DELIMITERS.get(delimiter or profile.delimiter)
    if wanted is None:
        raise CsvFileError(f"unknown delimiter {delimiter!r}: use comma, tab, semicolon, bar or auto")
    candidates = AUTO_DELIMITERS if wanted == "auto" else (wanted,)
    best: tuple[int, int, dict[str, int]] = (0, 1, {})  # (columns matched, line, columns): for the error
    first_nul: int | None = None
    chosen: tuple[int, str, dict[str, int]] | None = None
    for number, line in enumerate(_lines(path, used), start=1):
        if number > profile.header_search_lines:
            break
        if "\x00" in line and first_nul is None:
            first_nul = number
        tries = [(d, _match_header(next(csv.reader([line.rstrip("\r\n")], delimiter=d), []), profile))
                 for d in candidates]
        d, found = max(tries, key=lambda t: len(t[1]))  # ties: the earlier candidate (comma before tab)
        if len(found) > best[0]:
            best = (len(found), number, found)
        if all(f in found for f in REQUIRED):
            chosen = (number, d, found)
            break
    if chosen is None:
        if first_nul is not None:  # NULs, not missing columns, are the likely reason no header matched
            raise _nul_in_header(best[1] if best[0] else first_nul)
        missing = [f"{f} ({'/'.join(profile.columns[f])})" for f in REQUIRED if f not in best[2]]
        raise CsvFileError(f"no header row of profile {profile.name} in the first {profile.header_search_lines} "
                           f"line(s): missing column(s) {', '.join(missing)}", best[1])
    header_line, sep, columns = chosen
    if "status" not in columns and profile.default_status is None:
        raise CsvFileError(f"no status column ({'/'.join(profile.columns.get('status', ()))}) and the profile "
                           "has no default_status", header_line)
    header = next((cells for number, cells in _records(_lines(path, used), sep) if number == header_line), [])
    if any("\x00" in cell for cell in header):
        raise _nul_in_header(header_line)
    return Table(path, header, header_line, columns, used, sep)

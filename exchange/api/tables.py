"""Operators' tables as CSV or Excel, besides JSON: ``?format=csv|xlsx``, or ``Accept: text/csv`` /
``application/vnd.openxmlformats-officedocument.spreadsheetml.sheet``.

CSV is UTF-8 with a byte order mark: Excel on Windows opens a CSV without one in the system's code page (GBK on
a Chinese system) and garbles every Chinese name. A cell that starts like a formula (``= + - @``, a tab or a
carriage return) is written as text in both formats: payloads and names come from hospitals, and a spreadsheet
must never run what a sender wrote (OWASP, "CSV injection").
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from fastapi import Request, Response

CSV_MEDIA = "text/csv"
XLSX_MEDIA = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
TableFormat = Literal["json", "csv", "xlsx"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: ``responses=`` entry of a route that answers a table in CSV or Excel too.
TABLE_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {
    CSV_MEDIA: {"schema": {"type": "string", "format": "binary"}},
    XLSX_MEDIA: {"schema": {"type": "string", "format": "binary"}}},
    "description": "JSON, or the table as CSV (UTF-8 with BOM) or Excel with `format` or `Accept`"}}


@dataclass(frozen=True)
class Table:
    """Rows of one table, each a dict; ``columns`` names the keys written, in order (the header row)."""

    name: str
    columns: Sequence[str]
    rows: Sequence[dict[str, Any]]


def wanted(request: Request, format: str | None) -> str:
    """The format asked for: the ``format`` parameter, else the Accept header, else JSON."""
    if format is not None:
        return format
    accept = request.headers.get("accept", "")
    if XLSX_MEDIA in accept:
        return "xlsx"
    if CSV_MEDIA in accept:
        return "csv"
    return "json"


def answer_table(request: Request, format: str | None, table: Table, as_json: Callable[[], Any]) -> Any:
    """The route's JSON answer, or ``table`` as a CSV or Excel download."""
    chosen = wanted(request, format)
    if chosen == "csv":
        return Response(to_csv(table), media_type=f"{CSV_MEDIA}; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{table.name}.csv"'})
    if chosen == "xlsx":
        return Response(to_xlsx(table), media_type=XLSX_MEDIA,
                        headers={"Content-Disposition": f'attachment; filename="{table.name}.xlsx"'})
    return as_json()


def _cell(value: Any) -> Any:
    """A value as a spreadsheet cell: numbers stay numbers, structures become JSON text, None an empty cell."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return orjson.dumps(value).decode()
    return str(value)


def _text(value: Any) -> str:
    cell = _cell(value)
    if cell is None:
        return ""
    text = str(cell) if not isinstance(cell, bool) else ("true" if cell else "false")
    return "'" + text if isinstance(value, str) and text.startswith(_FORMULA_START) else text


def to_csv(table: Table) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_text(row.get(c)) for c in table.columns])
    return out.getvalue().encode("utf-8-sig")


def to_xlsx(table: Table) -> bytes:
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    sheet.title = table.name[:31]
    sheet.append(list(table.columns))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for r, row in enumerate(table.rows, start=2):
        for c, column in enumerate(table.columns, start=1):
            value = _cell(row.get(column))
            if isinstance(value, str):
                value = ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)  # control characters: not allowed in XML
            cell = sheet.cell(row=r, column=c, value=value)
            if isinstance(value, str):
                cell.data_type = "s"  # never a formula, whatever the text starts with
    sheet.freeze_panes = "A2"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()

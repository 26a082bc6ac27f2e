"""The store's write path: rows of a model's table to the database, one way per backend.

Every write of the store goes through here (results and their observations and heads, dead letters, audit
records, presentations, decisions, re-mapped results):

- PostgreSQL: psycopg itself. ``COPY`` for a bulk load of rows known to be new; otherwise one statement whose
  rows travel as one JSON document, unpacked by ``json_to_recordset`` (one C serialization by orjson instead of
  psycopg's per-row work, which costs ten times more), and which inside :func:`pipelined` is sent without waiting
  for its reply.
- SQLite: the sqlite3 driver's ``executemany`` (one ``execute`` per row where rows come back, since the driver
  drops the rows of an ``executemany``).

Going past SQLAlchemy's statement layer saves its per-value Python work (a batch is thousands of rows); what it
would have given, this module gives from the models: the columns written, the order of their values and their
SQL types come from the model's table (``Model.__table__.columns``). A row is a dict from column name to value,
and a row that lacks a column of its table is refused, so a column added to a model is written by every writer
or by none. Driver errors are raised as SQLAlchemy's (``sqlalchemy.exc.DBAPIError`` and its subclasses), as the
rest of the store raises them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import Column, Connection, Float, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from exchange.store.models import UTCDateTime

#: Rows whose unique key (any UNIQUE constraint of the table) is already stored are skipped.
DO_NOTHING = "ON CONFLICT DO NOTHING"

Row = dict[str, Any]


def columns(table: Table, *, with_id: bool = False) -> tuple[str, ...]:
    """The columns a write of ``table`` fills, in the table's order: every column of the model but the id the
    database generates (its autoincrementing primary key), which is written only ``with_id``."""
    generated = table.autoincrement_column
    return tuple(column.name for column in table.columns if with_id or column is not generated)


def sqlite_time(moment: datetime | None) -> str | None:
    """A datetime as the store's columns hold it on SQLite: UTC, ``YYYY-MM-DD HH:MM:SS.ffffff`` (SQLAlchemy's
    SQLite DATETIME format; a test compares the two). One C call instead of SQLAlchemy's two Python-level
    processors. A naive datetime is refused, as the column type refuses it."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the store; times must carry a zone")
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]  # without its "+00:00"


def _converter(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What a value of ``column`` goes through on its way to the driver; None: nothing."""
    if isinstance(column.type, UTCDateTime):
        # PostgreSQL takes aware datetimes as they are (sessions run in UTC, see exchange.store.db.connect).
        return sqlite_time if dialect.name == "sqlite" else None
    if isinstance(column.type, Float):
        return None  # a REAL / float8 column takes Python numbers as they are
    return column.type.dialect_impl(dialect).bind_processor(dialect)  # type: ignore[no-any-return]


_NOTHING = object()


class _Layout:
    """Some columns of one table as one backend is given them: their SQL, and each row's values in the columns'
    order (converted as their types need) or, on PostgreSQL, the rows as one JSON document."""

    def __init__(self, table: Table, names: tuple[str, ...], dialect: Dialect) -> None:
        self.table = table
        # Plain strings: a column's name may be SQLAlchemy's str subclass, which orjson refuses as a key.
        self.names = names = tuple(str(name) for name in names)
        quote = dialect.identifier_preparer.quote
        self.name = dialect.identifier_preparer.format_table(table)
        self.quoted = tuple(quote(name) for name in names)
        self.json = dialect.name == "postgresql"
        # PostgreSQL: the rows' relation, each column typed as the model types it.
        self.recordset = ("json_to_recordset(%s::json) AS x(" + ", ".join(
            f"{quoted} {table.c[name].type.compile(dialect=dialect)}" for name, quoted in zip(names, self.quoted))
            + ")")
        self._pick = itemgetter(*names) if len(names) > 1 else (lambda row, name=names[0]: (row[name],))
        self._convert = tuple((i, convert) for i, name in enumerate(names)
                              if (convert := _converter(table.c[name], dialect)) is not None)

    def _values(self, rows: Sequence[Row]) -> list[Sequence[Any]]:
        pick, convert = self._pick, self._convert
        try:
            picked = [pick(row) for row in rows]
        except KeyError as exc:
            raise KeyError(f"a row written to {self.table.name} has no {exc.args[0]!r} column") from None
        if not convert:
            return picked  # type: ignore[return-value]
        converted = []
        # A batch's rows often share a value object (``stored_at`` is one datetime per batch): convert it once.
        last: list[tuple[Any, Any]] = [(_NOTHING, None)] * len(convert)
        for values in picked:
            values = list(values)
            for k, (i, to_driver) in enumerate(convert):
                value = values[i]
                seen, made = last[k]
                if value is not seen:
                    made = to_driver(value)
                    last[k] = (value, made)
                values[i] = made
            converted.append(values)
        return converted

    def params(self, rows: Sequence[Row]) -> Any:
        """The statement's parameters: a sequence per row, or (PostgreSQL) the one JSON document."""
        values = self._values(rows)  # every row has every column, or nothing is written
        if not self.json:
            return values
        if self._convert:
            rows = [dict(zip(self.names, row)) for row in values]
        # Columns the relation does not name (an id the database generates) are left out by json_to_recordset.
        return (orjson.dumps(rows).decode(),)


_layouts: dict[tuple[Table, tuple[str, ...] | bool, str], _Layout] = {}


def _layout(table: Table, names: tuple[str, ...], dialect: Dialect) -> _Layout:
    found = _layouts.get((table, names, dialect.name))
    if found is None:
        found = _layouts[(table, names, dialect.name)] = _Layout(table, names, dialect)
    return found


def _rows_layout(table: Table, with_id: bool, dialect: Dialect) -> _Layout:
    """The layout of whole rows of ``table`` (the check writes some on every request: found in one look-up)."""
    found = _layouts.get((table, with_id, dialect.name))
    if found is None:
        found = _layouts[(table, with_id, dialect.name)] = _layout(table, columns(table, with_id=with_id), dialect)
    return found


def _error(conn: Connection, statement: str, exc: Exception) -> DBAPIError:
    return DBAPIError.instance(statement, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect)


def _run(conn: Connection, sql: str, layout: _Layout, rows: Sequence[Row], returning: bool) -> Any:
    """Run ``sql`` on ``rows``; the rows it returned, or else the number of rows it changed."""
    params = layout.params(rows)
    driver = conn.connection.driver_connection
    try:
        if layout.json:  # one statement
            cursor = driver.execute(sql, params)  # type: ignore[union-attr]
            return cursor.fetchall() if returning else cursor.rowcount
        cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            if not returning:
                cursor.executemany(sql, params)
                return cursor.rowcount
            return [row for row_values in params for row in cursor.execute(sql, row_values).fetchall()]
        finally:
            cursor.close()
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _error(conn, sql, exc) from exc


_inserts: dict[tuple[_Layout, str, tuple[str, ...]], str] = {}


def _insert_sql(layout: _Layout, on_conflict: str, returning: tuple[str, ...]) -> str:
    found = _inserts.get((layout, on_conflict, returning))
    if found is None:
        names = ", ".join(layout.quoted)
        found = (f"INSERT INTO {layout.name} ({names}) "
                 + (f"SELECT {names} FROM {layout.recordset}" if layout.json
                    else f"VALUES ({', '.join('?' * len(layout.names))})"))
        if on_conflict:
            found += " " + on_conflict
        if returning:
            found += " RETURNING " + ", ".join(returning)
        _inserts[(layout, on_conflict, returning)] = found
    return found


def insert(conn: Connection, table: Table, rows: Sequence[Row], *, with_id: bool = False,
           on_conflict: str = "") -> int:
    """INSERT ``rows`` (each a column → value dict holding every column of :func:`columns`) inside ``conn``'s
    transaction. ``on_conflict`` is the statement's ``ON CONFLICT`` clause, if any (e.g. :data:`DO_NOTHING`; an
    upsert must not meet one key twice in one call: PostgreSQL changes a row once per statement).

    Returns the number of rows inserted (or changed by an upsert); inside :func:`pipelined` the reply is read
    later and the count is not known (-1).
    """
    if not rows:
        return 0
    layout = _rows_layout(table, with_id, conn.dialect)
    return _run(conn, _insert_sql(layout, on_conflict, ()), layout, rows, False)  # type: ignore[no-any-return]


def insert_returning(conn: Connection, table: Table, rows: Sequence[Row], returning: Sequence[str], *,
                     with_id: bool = False, on_conflict: str = "") -> list[tuple[Any, ...]]:
    """:func:`insert`, giving back the ``returning`` columns (in that order) of every row inserted."""
    if not rows:
        return []
    layout = _rows_layout(table, with_id, conn.dialect)
    returned = tuple(conn.dialect.identifier_preparer.quote(table.c[name].name) for name in returning)
    return _run(conn, _insert_sql(layout, on_conflict, returned), layout, rows, True)  # type: ignore[no-any-return]


def load(conn: Connection, table: Table, rows: Sequence[Row], *, with_id: bool = False) -> None:
    """Bulk-load ``rows`` known to be new (``COPY`` on PostgreSQL): a row whose key is already stored makes
    the whole load fail with an ``IntegrityError``, to be rolled back by the caller."""
    if not rows:
        return
    layout = _rows_layout(table, with_id, conn.dialect)
    if not layout.json:
        _run(conn, _insert_sql(layout, "", ()), layout, rows, False)
        return
    sql = f"COPY {layout.name} ({', '.join(layout.quoted)}) FROM STDIN"
    try:
        with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(sql) as copy:
                for values in layout._values(rows):
                    copy.write_row(values)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _error(conn, sql, exc) from exc


def _named(table: Table, rows: Sequence[Row], but: Sequence[str] = ()) -> tuple[str, ...]:
    """The model's columns named by the rows' keys, in the table's order (an unknown name raises KeyError)."""
    given = set(rows[0])
    for name in given:
        table.c[name]  # noqa: B018 - a name that is no column of the model is refused here
    return tuple(column.name for column in table.columns if column.name in given and column.name not in but)


def _matching(layout: _Layout, key: Sequence[str]) -> str:
    """The condition that a stored row's ``key`` columns equal a given row's (PostgreSQL: a row of ``x``)."""
    found = [quoted for name, quoted in zip(layout.names, layout.quoted) if name in key]
    if layout.json:
        return " AND ".join(f"{layout.name}.{quoted} = x.{quoted}" for quoted in found)
    return " AND ".join(f"{quoted} = ?" for quoted in found)


def update(conn: Connection, table: Table, rows: Sequence[Row], *, key: Sequence[str]) -> int:
    """UPDATE the rows of ``table`` whose ``key`` columns equal each row's (one given row per key): every other
    column the rows give is set to the row's value. Returns the number of rows changed (-1 inside
    :func:`pipelined`)."""
    if not rows:
        return 0
    key = tuple(table.c[name].name for name in key)
    assigned = _named(table, rows, but=key)
    layout = _layout(table, assigned + key, conn.dialect)
    set_to = layout.quoted[:len(assigned)]
    if layout.json:
        sql = (f"UPDATE {layout.name} SET " + ", ".join(f"{quoted} = x.{quoted}" for quoted in set_to)
               + f" FROM {layout.recordset} WHERE {_matching(layout, key)}")
    else:
        sql = (f"UPDATE {layout.name} SET " + ", ".join(f"{quoted} = ?" for quoted in set_to)
               + f" WHERE {_matching(layout, key)}")
    return _run(conn, sql, layout, rows, False)  # type: ignore[no-any-return]


def delete(conn: Connection, table: Table, keys: Sequence[Row]) -> int:
    """DELETE the rows of ``table`` whose columns equal each of ``keys`` (column → value dicts, all naming the
    same columns). Returns the number of rows deleted (-1 inside :func:`pipelined`)."""
    if not keys:
        return 0
    names = _named(table, keys)
    layout = _layout(table, names, conn.dialect)
    sql = (f"DELETE FROM {layout.name} USING {layout.recordset} WHERE {_matching(layout, names)}" if layout.json
           else f"DELETE FROM {layout.name} WHERE {_matching(layout, names)}")
    return _run(conn, sql, layout, keys, False)  # type: ignore[no-any-return]


@contextmanager
def pipelined(conn: Connection) -> Iterator[bool]:
    """On PostgreSQL, the writes of this module inside the block do not wait for their replies (libpq's pipeline
    mode): the server works while this process goes on, and any error is raised when the block ends, before the
    transaction can commit. Only writes that return nothing belong inside (SQLAlchemy statements, and writes
    that return rows, read a reply at once). Elsewhere the block simply runs. Yields whether writes are
    pipelined."""
    if conn.dialect.name != "postgresql":
        yield False
        return
    try:
        with conn.connection.driver_connection.pipeline():  # type: ignore[union-attr]
            yield True
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _error(conn, "(pipelined writes)", exc) from exc

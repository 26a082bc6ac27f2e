"""The store's write path: rows of a model's table to the database, one way per backend.

Every write of the store goes through here (results and their observations and heads, dead letters, audit
records, presentations, decisions, re-mapped results):

- PostgreSQL: psycopg itself. ``COPY`` for a bulk load of rows known to be new; ``executemany`` otherwise, which
  inside :func:`pipelined` sends its statements without waiting for their replies.
- SQLite: the sqlite3 driver's ``executemany`` (one ``execute`` per row where rows come back, since the driver
  drops the rows of an ``executemany``).

Going past SQLAlchemy's statement layer saves its per-value Python work (a batch is thousands of rows); what it
would have given, this module gives from the models: the columns written and the order of their values come from
the model's table (``Model.__table__.columns``). A row is a mapping from column name to value, and a row that
lacks a column of its table is refused, so a column added to a model is written by every writer or by none.
Driver errors are raised as SQLAlchemy's (``sqlalchemy.exc.DBAPIError`` and its subclasses), as the rest of the
store raises them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Column, Connection, Float, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from exchange.store.models import UTCDateTime

#: Rows whose unique key (any UNIQUE constraint of the table) is already stored are skipped.
DO_NOTHING = "ON CONFLICT DO NOTHING"

Row = Mapping[str, Any]


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
        # psycopg sends aware datetimes as they are (sessions run in UTC, see exchange.store.db.connect).
        return sqlite_time if dialect.name == "sqlite" else None
    if isinstance(column.type, Float):
        return None  # both drivers take Python numbers for a REAL / float8 column as they are
    return column.type.dialect_impl(dialect).bind_processor(dialect)  # type: ignore[no-any-return]


class _Layout:
    """How rows of some columns of one table reach one backend's driver: the values in the columns' order, each
    converted as its type needs."""

    def __init__(self, table: Table, names: tuple[str, ...], dialect: Dialect) -> None:
        self.table = table
        self.names = names
        self._pick = itemgetter(*names) if len(names) > 1 else (lambda row, name=names[0]: (row[name],))
        self._convert = tuple((i, convert) for i, name in enumerate(names)
                              if (convert := _converter(table.c[name], dialect)) is not None)

    def values(self, rows: Sequence[Row]) -> list[Sequence[Any]]:
        pick, convert = self._pick, self._convert
        try:
            picked = [pick(row) for row in rows]
        except KeyError as exc:
            raise KeyError(f"a row written to {self.table.name} has no {exc.args[0]!r} column") from None
        if not convert:
            return picked  # type: ignore[return-value]
        converted = []
        for values in picked:
            values = list(values)
            for i, to_driver in convert:
                values[i] = to_driver(values[i])
            converted.append(values)
        return converted


_layouts: dict[tuple[Table, tuple[str, ...], str], _Layout] = {}


def _layout(table: Table, names: tuple[str, ...], dialect: Dialect) -> _Layout:
    found = _layouts.get((table, names, dialect.name))
    if found is None:
        found = _layouts[(table, names, dialect.name)] = _Layout(table, names, dialect)
    return found


def _quoted(dialect: Dialect, names: Sequence[str]) -> str:
    return ", ".join(dialect.identifier_preparer.quote(name) for name in names)


def _marker(dialect: Dialect) -> str:
    return "%s" if dialect.name == "postgresql" else "?"


_inserts: dict[tuple[Table, tuple[str, ...], str, str, tuple[str, ...]], str] = {}


def _insert_sql(table: Table, names: tuple[str, ...], dialect: Dialect, on_conflict: str,
                returning: tuple[str, ...]) -> str:
    found = _inserts.get((table, names, dialect.name, on_conflict, returning))
    if found is not None:
        return found
    sql = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({_quoted(dialect, names)}) "
           f"VALUES ({', '.join([_marker(dialect)] * len(names))})")
    if on_conflict:
        sql += " " + on_conflict
    if returning:
        sql += f" RETURNING {_quoted(dialect, returning)}"
    _inserts[(table, names, dialect.name, on_conflict, returning)] = sql
    return sql


def _error(conn: Connection, statement: str, exc: Exception) -> DBAPIError:
    return DBAPIError.instance(statement, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect)


def _executemany(conn: Connection, sql: str, values: Sequence[Sequence[Any]], returning: bool) -> Any:
    """Run ``sql`` once per row of values; the rows it returned, or else the number of rows it changed."""
    driver = conn.connection.driver_connection
    try:
        if conn.dialect.name == "postgresql":
            with driver.cursor() as cursor:  # type: ignore[union-attr]
                cursor.executemany(sql, values, returning=returning)
                if not returning:
                    return cursor.rowcount
                found: list[tuple[Any, ...]] = []
                while True:
                    found += cursor.fetchall()
                    if not cursor.nextset():
                        return found
        cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            if not returning:
                cursor.executemany(sql, values)
                return cursor.rowcount
            return [row for row_values in values for row in cursor.execute(sql, row_values).fetchall()]
        finally:
            cursor.close()
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _error(conn, sql, exc) from exc


def insert(conn: Connection, table: Table, rows: Sequence[Row], *, with_id: bool = False,
           on_conflict: str = "") -> int:
    """INSERT ``rows`` (each a column → value mapping holding every column of :func:`columns`) inside ``conn``'s
    transaction. ``on_conflict`` is the statement's ``ON CONFLICT`` clause, if any (e.g. :data:`DO_NOTHING`).

    Returns the number of rows inserted (or changed by an upsert); inside :func:`pipelined` the replies are read
    later and the count is 0.
    """
    if not rows:
        return 0
    names = columns(table, with_id=with_id)
    layout = _layout(table, names, conn.dialect)
    return _executemany(conn, _insert_sql(table, names, conn.dialect, on_conflict, ()), layout.values(rows),
                        False)  # type: ignore[no-any-return]


def insert_returning(conn: Connection, table: Table, rows: Sequence[Row], returning: Sequence[str], *,
                     with_id: bool = False, on_conflict: str = "") -> list[tuple[Any, ...]]:
    """:func:`insert`, giving back the ``returning`` columns (in that order) of every row inserted."""
    if not rows:
        return []
    names = columns(table, with_id=with_id)
    layout = _layout(table, names, conn.dialect)
    returned = tuple(table.c[name].name for name in returning)
    return _executemany(conn, _insert_sql(table, names, conn.dialect, on_conflict, returned),  # type: ignore[no-any-return]
                        layout.values(rows), True)


def load(conn: Connection, table: Table, rows: Sequence[Row], *, with_id: bool = False) -> None:
    """Bulk-load ``rows`` known to be new (``COPY`` on PostgreSQL): a row whose key is already stored makes
    the whole load fail with an ``IntegrityError``, to be rolled back by the caller."""
    if not rows:
        return
    names = columns(table, with_id=with_id)
    layout = _layout(table, names, conn.dialect)
    if conn.dialect.name != "postgresql":
        _executemany(conn, _insert_sql(table, names, conn.dialect, "", ()), layout.values(rows), False)
        return
    sql = f"COPY {conn.dialect.identifier_preparer.format_table(table)} ({_quoted(conn.dialect, names)}) FROM STDIN"
    try:
        with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(sql) as copy:
                for values in layout.values(rows):
                    copy.write_row(values)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _error(conn, sql, exc) from exc


def _names_of(table: Table, rows: Sequence[Row], than: Sequence[str] = ()) -> tuple[str, ...]:
    """The model's columns named by the rows' keys, in the table's order (an unknown name raises KeyError)."""
    given = set(rows[0])
    for name in given:
        table.c[name]  # noqa: B018 - a name that is no column of the model is refused here
    return tuple(column.name for column in table.columns if column.name in given and column.name not in than)


def update(conn: Connection, table: Table, rows: Sequence[Row], *, key: Sequence[str]) -> int:
    """UPDATE the rows of ``table`` whose ``key`` columns equal each row's: every other column the rows give is
    set to the row's value. Returns the number of rows changed (0 inside :func:`pipelined`)."""
    if not rows:
        return 0
    key = tuple(table.c[name].name for name in key)
    assigned = _names_of(table, rows, than=key)
    dialect, marker = conn.dialect, _marker(conn.dialect)
    sql = (f"UPDATE {dialect.identifier_preparer.format_table(table)} SET "
           + ", ".join(f"{dialect.identifier_preparer.quote(name)} = {marker}" for name in assigned)
           + " WHERE " + " AND ".join(f"{dialect.identifier_preparer.quote(name)} = {marker}" for name in key))
    return _executemany(conn, sql, _layout(table, assigned + key, dialect).values(rows),  # type: ignore[no-any-return]
                        False)


def delete(conn: Connection, table: Table, keys: Sequence[Row]) -> int:
    """DELETE the rows of ``table`` whose columns equal each of ``keys`` (column → value mappings, all naming
    the same columns). Returns the number of rows deleted (0 inside :func:`pipelined`)."""
    if not keys:
        return 0
    names = _names_of(table, keys)
    dialect, marker = conn.dialect, _marker(conn.dialect)
    sql = (f"DELETE FROM {dialect.identifier_preparer.format_table(table)} WHERE "
           + " AND ".join(f"{dialect.identifier_preparer.quote(name)} = {marker}" for name in names))
    return _executemany(conn, sql, _layout(table, names, dialect).values(keys), False)  # type: ignore[no-any-return]


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

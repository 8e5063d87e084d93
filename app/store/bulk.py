"""Statements over many rows whose SQL text does not depend on how many rows there are.

A batch's SQL used to grow with the batch: `id IN (:id_1, ..., :id_100)` and multi-row or
executemany INSERTs. Each new length is a new statement for every layer: SQLAlchemy compiles it,
psycopg parses its text again (its statement cache keeps only statements up to 4 KiB; py-spy: ~17 %
of a job worker under bulk load), and PostgreSQL parses and plans it again. On PostgreSQL these
take whole lists as array parameters instead: `id = ANY(:ids)` and
`INSERT ... SELECT * FROM unnest(:col1, :col2, ...)`, one fixed statement each, which psycopg
caches and, after a few runs, prepares on the server. Other stores (SQL Server, SQLite) keep the
portable forms, in lists of at most IN_LIST_MAX ids (``chunks``).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Sequence, Tuple, TypeVar

from sqlalchemy import Column, String, Table, any_, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, CursorResult


T = TypeVar("T")

#: Most ids in one statement's IN list: SQL Server takes at most 2,100 parameters a statement.
IN_LIST_MAX = 1000


def chunks(ids: List[T]) -> List[List[T]]:
    """``ids`` cut into lists of at most IN_LIST_MAX (one statement each, on every store)."""
    return [ids[i:i + IN_LIST_MAX] for i in range(0, len(ids), IN_LIST_MAX)]


def _array_of(col: Column) -> ARRAY:
    """The array type of ``col``'s values, without a string length: an explicit cast to
    varchar(n) cuts longer values silently in PostgreSQL, where a single value bound to the column
    is refused as too long (and an over-long id must not match the job id that is its prefix)."""
    item = col.type
    if isinstance(item, String) and item.length is not None:
        item = type(item)()
    return ARRAY(item)


def arrays(conn: Connection) -> bool:
    """Whether ``conn``'s store takes lists as array parameters (PostgreSQL)."""
    return conn.dialect.name == "postgresql"


def id_in(col: Column, name: str, as_array: bool) -> Any:
    """``col`` is one of the list bound as ``name``: `col = ANY(:name)` as an array, else an
    expanding IN list. Statements are built once per form (see jobs._claim_statement); pick the
    form with ``arrays(conn)`` when executing."""
    if as_array:
        return col == any_(bindparam(name, type_=_array_of(col)))
    return col.in_(bindparam(name, expanding=True))


@functools.lru_cache(maxsize=None)
def _unnest_insert(table: Table, keys: Tuple[str, ...], returning: Tuple[str, ...]) -> Any:
    """INSERT INTO table (keys) SELECT * FROM unnest(:k0, ...) [RETURNING ...], typed per column."""
    lists = [bindparam("k%d" % i, type_=_array_of(table.c[k])) for i, k in enumerate(keys)]
    source = func.unnest(*lists).table_valued(*keys).render_derived()
    stmt = insert(table).from_select(list(keys), select(*[source.c[k] for k in keys]))
    return stmt.returning(*[table.c[r] for r in returning]) if returning else stmt


@functools.lru_cache(maxsize=None)
def _plain_insert(table: Table, returning: Tuple[str, ...]) -> Any:
    stmt = insert(table)
    return stmt.returning(*[table.c[r] for r in returning]) if returning else stmt


def insert_rows(conn: Connection, table: Table, rows: Sequence[Dict[str, Any]],
                returning: Tuple[str, ...] = ()) -> CursorResult:
    """Insert ``rows`` (dicts with the same keys) in one statement; with ``returning``, the
    result's rows are those columns of each inserted row (in no promised order). On PostgreSQL
    one fixed statement whatever the number of rows; elsewhere SQLAlchemy's executemany (which runs
    a list of one row as a plain execute)."""
    if not rows:
        raise ValueError("no rows to insert")
    keys = tuple(rows[0])
    if arrays(conn) and len(rows) > 1:
        params = {"k%d" % i: [r[k] for r in rows] for i, k in enumerate(keys)}
        return conn.execute(_unnest_insert(table, keys, tuple(returning)), params)
    return conn.execute(_plain_insert(table, tuple(returning)), list(rows))

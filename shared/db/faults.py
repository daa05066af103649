"""Which database errors are transient: worth a retry, and UNAVAILABLE to a caller.

A lost connection, a server restarting or refusing connections, a pool or lock timeout, a
serialization failure or deadlock: the same statement may well succeed a moment later. A
constraint violation, bad data or a programming error will fail the same way again.
"""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy import exc as sa_exc

from shared.errors import elide

# SQLSTATE classes and codes that say "try again": connection exceptions (08), operator
# intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now),
# insufficient resources (53), serialization failure and deadlock (40001, 40P01).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53")
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01"})
# SQLite's own transient conditions, by message.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "disk i/o error")


def _sqlstate(error: BaseException) -> str:
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else ""


def is_transient(error: BaseException) -> bool:
    """True when error (or what it wraps) is a database fault that a retry may get past."""
    return any(_transient_here(current) for current in _chain(error))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        if isinstance(current, sa_exc.DBAPIError) and current.orig is not None:
            current = current.orig
        else:
            current = current.__cause__ or current.__context__
    return seen


def involves_database(exc: BaseException) -> bool:
    """True when exc, or what it wraps, came from SQLAlchemy or a database driver."""
    return any(
        isinstance(e, sa_exc.SQLAlchemyError | psycopg.Error | sqlite3.Error) for e in _chain(exc)
    )


def describe_exception(exc: BaseException) -> str:
    """The kind of exc and its causes, leaving out what may quote a statement's values.

    Database messages quote values (`invalid input syntax for type integer: "..."`, the key
    of a unique violation). Kept: each class, SQLSTATE, constraint, table and column, and the
    statement with its placeholders.
    """
    database = involves_database(exc)
    parts: list[str] = []
    for error in _chain(exc):
        name = type(error).__qualname__
        if isinstance(error, sa_exc.StatementError):
            statement = " ".join((error.statement or "").split())
            parts.append(f"{name} [statement: {elide(statement, 500)}]")
        elif isinstance(error, psycopg.Error):
            diag = error.diag
            found = {
                "sqlstate": error.sqlstate,
                "constraint": diag.constraint_name,
                "table": diag.table_name,
                "column": diag.column_name,
            }
            parts.append(name + "".join(f" {k}={v}" for k, v in found.items() if v))
        elif isinstance(error, sqlite3.Error):
            # SQLite's messages name tables and columns, never bound values.
            parts.append(f"{name}: {elide(str(error), 200)}")
        elif database:
            parts.append(name)
        else:
            parts.append(f"{name}: {elide(str(error), 200)}")
    return " <- ".join(parts)


def _transient_here(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        # psycopg raises OperationalError for refused and dropped connections alike.
        state = _sqlstate(error)
        return (
            not state or state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state in (_TRANSIENT_SQLSTATES)
        )
    if isinstance(error, psycopg.Error):
        state = _sqlstate(error)
        return state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state in _TRANSIENT_SQLSTATES
    if isinstance(error, sqlite3.OperationalError):
        text = str(error).lower()
        return any(marker in text for marker in _SQLITE_TRANSIENT)
    return isinstance(error, ConnectionError | TimeoutError)

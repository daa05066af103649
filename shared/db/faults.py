"""Which database errors are transient: worth a retry, and UNAVAILABLE to a caller.

A lost connection, a server restarting or refusing connections, a pool or lock timeout, a
serialization failure or deadlock: the same statement may well succeed a moment later. A
constraint violation, bad data or a programming error will fail the same way again.
"""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy import exc as sa_exc

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
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_here(current):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.orig is not None:
            current = current.orig
        else:
            current = current.__cause__ or current.__context__
    return False


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

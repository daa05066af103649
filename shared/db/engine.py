"""Async engines for the two supported databases."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.errors import InvalidArgument


def async_url(url: str | URL) -> URL:
    """The URL with the async driver for its backend (aiosqlite, psycopg)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise InvalidArgument(f"Unsupported database {backend!r}: use sqlite or postgresql.")


def sync_url(url: str | URL) -> URL:
    """The URL with the blocking driver for its backend, for migrations."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    return async_url(parsed)


WRITE_OPTION = "tandem_write"
_WAL_ATTEMPTS = 10
CONNECT_TIMEOUT_SECONDS = 5


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Take over transaction control from the driver so `_sqlite_begin` decides how to BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # First, so that every statement after it (switching to WAL included, which takes a lock
    # while another connection may be opening the same new file) waits instead of failing.
    cursor.execute("PRAGMA busy_timeout=5000")
    # WAL lets readers proceed during a write; busy_timeout makes writers queue instead of failing.
    _use_wal(cursor)
    # In WAL mode NORMAL still survives a crash of the process; only an OS crash or power
    # loss may drop the last commits. Syncing every commit would cap the event log's rate.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _use_wal(cursor: Any) -> None:
    """Puts the file in WAL mode (it stays so); a no-op for a file that already is.

    Switching needs the file to itself. Two services opening one new file at once (tests do)
    can find it busy even past busy_timeout, so the switch is tried a few times.
    """
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    for attempt in range(_WAL_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:
            if "locked" not in str(exc).lower() or attempt == _WAL_ATTEMPTS - 1:
                raise
            # Once per new file, while it is being created: short enough to block nothing.
            time.sleep(0.02 * (attempt + 1))


def _sqlite_begin(connection: Any) -> None:
    # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    # another writer committed in between; units that write take the write lock up front.
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(url: str | URL, *, echo: bool = False) -> AsyncEngine:
    """Builds the service's async engine; the caller owns and disposes it."""
    target = async_url(url)
    # Statements' values (message text, tool results, secrets in documents) must never reach
    # a log line: not SQLAlchemy's echo, nor the text of an error it raises.
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if target.get_backend_name() == "postgresql":
        kwargs.update(
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=10,
            # An unreachable server fails the call (UNAVAILABLE, retried) in seconds rather
            # than holding it until the client's deadline.
            pool_timeout=CONNECT_TIMEOUT_SECONDS * 2,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
    engine = create_async_engine(target, **kwargs)
    if target.get_backend_name() == "sqlite":
        # aiosqlite logs every statement with its parameters at DEBUG.
        driver_log = logging.getLogger("aiosqlite")
        driver_log.setLevel(max(driver_log.level, logging.INFO))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


async def dispose_engine(engine: AsyncEngine, wait_seconds: float = 2.0) -> None:
    """Disposes the engine once connections in use (or being opened) are back in the pool.

    RPC handlers cancelled by shutdown or by a client hanging up may still be returning or
    closing their connection. Disposing or closing the event loop under them can strand an
    aiosqlite worker thread, which then holds the process open; so wait for them first.
    """
    pool: Any = engine.pool
    checked_out = getattr(pool, "checkedout", lambda: 0)
    for _ in range(max(1, int(wait_seconds / 0.01))):
        if checked_out() <= 0:
            break
        await asyncio.sleep(0.01)
    await engine.dispose()

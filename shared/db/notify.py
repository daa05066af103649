"""Wake-ups for readers that follow a table: in process, and across replicas on PostgreSQL.

Payloads carry ids (and positions) only, never content: a woken reader reads what it lacks
from the database, so a lost or duplicated wake-up costs latency, never correctness. After a
reconnect the listener reports None, since anything may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

_log = logging.getLogger(__name__)


def libpq_conninfo(url: str) -> str:
    """A libpq connection string from a SQLAlchemy PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresListener:
    """LISTENs on one channel and hands every NOTIFY's payload to on_payload.

    After (re)connecting it calls on_payload(None): anything may have changed meanwhile.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        on_payload: Callable[[str | None], None],
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 5.0,
    ) -> None:
        self._conninfo = libpq_conninfo(url)
        self._channel = channel
        self._on_payload = on_payload
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Starts listening in the background and waits for the first LISTEN to be in place."""
        self._task = asyncio.create_task(self._run(), name=f"listen:{self._channel}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=10)

    async def stop(self) -> None:
        """Stops listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = self._reconnect_delay
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=10
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.connected.set()
                    delay = self._reconnect_delay
                    # Anything committed while we were not listening is found by re-reading.
                    self._on_payload(None)
                    async for notify in conn.notifies():
                        self._on_payload(notify.payload)
            except Exception as exc:
                # Whatever went wrong, the listener lives on: without it this replica's
                # followers would wait for what other replicas write until they time out.
                self.connected.clear()
                if not isinstance(exc, psycopg.Error | OSError):
                    _log.exception("LISTEN %s failed unexpectedly; reconnecting", self._channel)
                else:
                    _log.warning(
                        "LISTEN %s lost (%s); reconnecting in %.1fs",
                        self._channel,
                        type(exc).__name__,
                        delay,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_reconnect_delay)

"""The unit of work: the one place a transaction is committed.

Repositories receive the unit's session and only add, flush and query; a service opens a unit
per request, does its work through repositories, and calls `commit()` once. Leaving the block
without committing rolls everything back.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db.engine import WRITE_OPTION

_WRITE_GATE = "tandem_write_gate"


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    info: dict[str, object] = {}
    if engine.dialect.name == "sqlite":
        # SQLite has one writer at a time and its busy handler is unfair: under many
        # concurrent writers one can starve past busy_timeout. Queue this process's writers
        # in order instead; the database lock then only ever sees one of them.
        info[_WRITE_GATE] = asyncio.Lock()
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info)


class UnitOfWork:
    """One transaction. Subclasses attach their repositories in `_bind`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, write: bool = False) -> None:
        self._sessions = sessions
        # A unit that will write says so up front; SQLite then takes its write lock at BEGIN.
        self._write = write
        self._session: AsyncSession | None = None
        self._gate: asyncio.Lock | None = None
        self.committed = False

    @property
    def session(self) -> AsyncSession:
        """The open session; only valid inside `async with`."""
        if self._session is None:
            raise RuntimeError("unit of work used outside its `async with` block")
        return self._session

    def _bind(self, session: AsyncSession) -> None:
        """Hook for subclasses to build repositories over the session."""

    async def __aenter__(self) -> Self:
        session = self._sessions()
        self.committed = False
        gate = session.info.get(_WRITE_GATE) if self._write else None
        if gate is not None:
            await gate.acquire()
            self._gate = gate
        try:
            if self._write:
                await session.connection(execution_options={WRITE_OPTION: True})
        except BaseException:
            await session.close()
            self._release()
            raise
        self._session = session
        self._bind(session)
        return self

    def _release(self) -> None:
        if self._gate is not None:
            self._gate.release()
            self._gate = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            if not self.committed:
                await session.rollback()
        finally:
            try:
                await session.close()
            finally:
                self._session = None
                self._release()

    async def commit(self) -> None:
        """Commits everything done in this unit."""
        await self.session.commit()
        self.committed = True

"""The unit of work: the one place a transaction is committed.

Repositories receive the unit's session and only add, flush and query; a service opens a unit
per request, does its work through repositories, and calls `commit()` once. Leaving the block
without committing rolls everything back.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class UnitOfWork:
    """One transaction. Subclasses attach their repositories in `_bind`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None
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
        self._session = self._sessions()
        self.committed = False
        self._bind(self._session)
        return self

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
            await session.close()
            self._session = None

    async def commit(self) -> None:
        """Commits everything done in this unit."""
        await self.session.commit()
        self.committed = True

    async def rollback(self) -> None:
        """Discards everything done in this unit so far."""
        await self.session.rollback()

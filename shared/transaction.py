"""The shape every unit of work has, whatever its repositories: one transaction.

Each service's ports (`config_service/configs/ports.py`, `session_service/ports.py`) extend
it with the repositories that work inside the transaction.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self


class Transaction(Protocol):
    """Begun by `async with`; writes count only once `commit()` has been called."""

    async def commit(self) -> None:
        """Commits everything done in this unit."""

    async def __aenter__(self) -> Self:
        """Begins the transaction."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Ends it; without a commit, every write is discarded."""

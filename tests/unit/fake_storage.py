"""What both services' in-memory units of work share: transactions over a working copy, one
writer at a time, stored first responses, and list-filter matching.

Each service's fake (`config_fakes.py`, `session_fakes.py`) adds its own state and
repositories on top.
"""

from __future__ import annotations

import asyncio
import re
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from shared.errors import Aborted, InvalidArgument
from shared.idempotency import StoredResponse
from shared.listing import Condition

# (tenant, method, request_id) -> (fingerprint, response)
Keys = dict[tuple[str, str, str], tuple[str, bytes]]


class Snapshot(Protocol):
    """A committed state: it can be copied, and it holds the stored first responses."""

    keys: Keys

    def copy(self) -> Self: ...


S = TypeVar("S", bound=Snapshot)


class FakeDatabase(Generic[S]):
    """The committed state, shared by every unit of work opened on it."""

    def __init__(self, state: S) -> None:
        self.state = state
        self.commits = 0
        # (tenant, scope) for every tenant lock taken, in order.
        self.locks: list[tuple[str, str]] = []
        self.write_lock = asyncio.Lock()


class FakeUnit(Generic[S]):
    """One transaction over a working copy of the database's state.

    Nothing written is visible to others until `commit()`; leaving without it discards the
    copy. Writers hold the database's write lock for the whole unit, as on SQLite.
    """

    def __init__(self, database: FakeDatabase[S], *, write: bool = False) -> None:
        self.database = database
        self._write = write
        self._work: S | None = None
        self.committed = False

    @property
    def work(self) -> S:
        """The working copy; only valid inside `async with`."""
        if self._work is None:
            raise RuntimeError("unit of work used outside its `async with` block")
        return self._work

    def writing(self) -> None:
        """Refuses writes in a unit that did not say it would write."""
        _ = self.work
        if not self._write:
            raise AssertionError("a write in a unit of work opened with write=False")

    def _opened(self) -> None:
        """Clears what a unit records per transaction (announcements, say)."""

    def _committed(self) -> None:
        """Publishes what the transaction recorded, once it commits."""

    def _closed(self) -> None:
        """Drops what an uncommitted transaction recorded."""

    async def commit(self) -> None:
        """Makes the working copy the database's state."""
        self.database.state = self.work
        self.database.commits += 1
        self._committed()
        self.committed = True
        self._work = self.work.copy()

    async def __aenter__(self) -> Self:
        if self._write:
            await self.database.write_lock.acquire()
        self.committed = False
        self._opened()
        self._work = self.database.state.copy()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._work = None
        self._closed()
        if self._write:
            self.database.write_lock.release()


class FakeIdempotency(Generic[S]):
    """First responses in a unit's working copy, refused as the SQL table refuses them."""

    def __init__(self, unit: FakeUnit[S]) -> None:
        self._unit = unit

    async def find(
        self, tenant_id: str, method: str, request_id: str, request_fingerprint: str
    ) -> StoredResponse | None:
        found = self._unit.work.keys.get((tenant_id, method, request_id))
        if found is None:
            return None
        if found[0] != request_fingerprint:
            raise InvalidArgument(
                "request_id was already used for a different request.",
                reason="REQUEST_ID_REUSED",
                metadata={"request_id": request_id},
            )
        return StoredResponse(found[1])

    async def record(
        self,
        tenant_id: str,
        method: str,
        request_id: str,
        request_fingerprint: str,
        response: bytes,
    ) -> None:
        self._unit.writing()
        key = (tenant_id, method, request_id)
        if key in self._unit.work.keys:
            raise Aborted(
                "A concurrent request with the same request_id is in progress; retry.",
                reason="REQUEST_ID_CONFLICT",
                metadata={"request_id": request_id},
            )
        self._unit.work.keys[key] = (request_fingerprint, response)


def holds(column: str | None, value: str, condition: Condition) -> bool:
    """Whether a stored column meets one filter condition (`*` a wildcard in a pattern)."""
    if column is None:
        return condition.op == "!="
    if condition.is_pattern:
        pattern = ".*".join(re.escape(part) for part in value.split("*"))
        equal = re.fullmatch(pattern, column, re.DOTALL) is not None
    else:
        equal = column == value
    return equal if condition.op == "=" else not equal

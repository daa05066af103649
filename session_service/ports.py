"""What SessionService's use cases need from storage: repository Protocols and a unit of work.

The use cases (`sessions/service.py`, `turns/`) depend on these Protocols only.
`session_service/storage` implements them over SQLAlchemy; `tests/unit` implements them in
memory. Repositories never commit: the unit of work does, once. Leaving its `async with`
block without committing discards every write, and every announcement with it.

Repositories own what the database does beside storing rows: the per-tenant locks that
order quota checks (`SessionRepo.lock_tenant`, and the count `SessionRepo.insert` returns),
and the announcements other replicas follow (`EventRepo.append` and
`TurnRepo.request_cancel` announce themselves at commit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from session_service.sessions.model import Message, Session
from session_service.turns.model import Approval, ApprovalStatus, Event, Turn, TurnStatus
from session_service.turns.queue import QueuedTurn
from shared.idempotency import IdempotencyRepo
from shared.listing import Condition
from shared.quotas import Bucket
from shared.transaction import Transaction
from shared.visibility import Viewer


class SessionRepo(Protocol):
    """A tenant's sessions."""

    async def lock_tenant(self, tenant_id: str, scope: str) -> None:
        """Waits for, then holds until the unit of work ends, the (scope, tenant) lock."""

    async def get(
        self, tenant_id: str, session_id: str, *, for_update: bool = False
    ) -> Session | None:
        """A session; for_update locks it until the unit ends."""

    async def insert(self, tenant_id: str, session: Session) -> int:
        """Stores a new session (AlreadyExists SESSION_ALREADY_EXISTS on a taken id).

        Returns how many sessions the tenant holds with it, counted under a per-tenant lock
        held until the unit ends, so concurrent creates on any replica count in turn.
        """

    async def save(self, tenant_id: str, session: Session) -> None:
        """Writes the session's mutable state."""

    async def delete(self, tenant_id: str, session_id: str) -> None:
        """Removes a session, its transcript, its turns and its event log."""

    async def idle(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(tenant, session id) of open sessions, of any tenant, idle past their ttl."""

    async def deletable(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(tenant, session id) of ended sessions, of any tenant, due to be deleted."""

    async def next_lifetime_deadline(self) -> datetime | None:
        """The earliest idle expiry or deletion time of any session, if there is one."""

    async def page(
        self,
        tenant_id: str,
        conditions: Sequence[Condition],
        after: tuple[str, str] | None,
        limit: int,
        *,
        viewer: Viewer | None = None,
    ) -> list[Session]:
        """Sessions matching conditions (and visible to viewer, when given), oldest first,
        after the (create_time, id) position."""

    async def count(
        self, tenant_id: str, conditions: Sequence[Condition], *, viewer: Viewer | None = None
    ) -> int:
        """How many sessions match conditions (and are visible to viewer, when given)."""


class MessageRepo(Protocol):
    """Transcripts."""

    async def append(self, tenant_id: str, session_id: str, message: Message) -> None:
        """Adds message at its sequence (the caller holds the session's row lock)."""

    async def page(
        self, tenant_id: str, session_id: str, after_sequence: int, limit: int
    ) -> list[Message]:
        """Messages after after_sequence, oldest first."""

    async def at(self, tenant_id: str, session_id: str, sequence: int) -> Message | None:
        """The message at sequence, if there is one."""

    async def remove_after(self, tenant_id: str, session_id: str, sequence: int) -> int:
        """Removes the messages after sequence from the transcript; returns how many.

        The caller holds the session's row lock. The event log keeps what they said.
        """


class TurnRepo(Protocol):
    """Turns of sessions."""

    async def get(self, tenant_id: str, session_id: str, turn_id: str) -> Turn | None:
        """One turn."""

    async def by_request(self, tenant_id: str, session_id: str, request_id: str) -> Turn | None:
        """The turn a request_id started, if any."""

    async def insert(self, tenant_id: str, turn: Turn) -> None:
        """Records a new turn; one with a taken request_id is AlreadyExists."""

    async def update(
        self,
        tenant_id: str,
        session_id: str,
        turn_id: str,
        *,
        status: TurnStatus | None = None,
        last_sequence: int | None = None,
        cancel_requested: bool | None = None,
        end_time: datetime | None = None,
        lease_expires: datetime | None = None,
    ) -> None:
        """Changes the given fields of a turn."""

    async def request_cancel(self, tenant_id: str, session_id: str, turn_id: str) -> None:
        """Flags the turn to stop and, at commit, tells every replica (it may run on any)."""

    async def renew(
        self, tenant_id: str, session_id: str, turn_id: str, lease_expires: datetime
    ) -> bool:
        """Extends a running turn's lease; False when the turn is no longer running."""

    async def of_sessions(self, tenant_id: str, turns: Mapping[str, str]) -> dict[str, Turn]:
        """The named turn of each session (session id -> turn id), by session id."""

    async def cancel_requested(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        """Whether someone asked to cancel the turn (read fresh)."""

    async def count_running(self, tenant_id: str, now: datetime) -> int:
        """The tenant's turns running now (not those whose lease ran out)."""

    async def running(self) -> list[tuple[str, Turn]]:
        """Every turn still marked RUNNING, with its tenant."""


class EventRepo(Protocol):
    """Sessions' event logs."""

    async def append(
        self, tenant_id: str, session_id: str, events: Sequence[Event], origin: str
    ) -> None:
        """Adds events at their sequences (the caller owns the session's running turn).

        At commit, followers on other replicas learn that the log reached the last of
        them; origin names the replica that hands them to its own followers from memory.
        """

    async def after(
        self, tenant_id: str, session_id: str, after_sequence: int, limit: int
    ) -> list[Event]:
        """Events after after_sequence, oldest first."""

    async def at(self, tenant_id: str, session_id: str, sequence: int) -> Event | None:
        """The event at sequence, if there is one."""

    async def compact(self, tenant_id: str, session_id: str, through: int) -> int:
        """Removes the deltas up to through and marks the log compacted that far.

        Returns how many events went. The session's compacted_through moves, and nothing
        else of it: compaction is neither activity nor a new version.
        """

    async def compactable(self, ended_before: datetime, limit: int) -> list[tuple[str, str, int]]:
        """(tenant, session, last sequence) of logs, of any tenant, with turns to compact.

        The last sequence is that of the session's latest turn that ended before
        ended_before; its deltas and those of every earlier turn are due.
        """

    async def next_compactable(self) -> datetime | None:
        """When the earliest finished turn whose deltas are still kept ended, if any did."""


class ApprovalRepo(Protocol):
    """Tool calls waiting turns paused for, and the decisions on them."""

    async def add(self, tenant_id: str, approvals: Sequence[Approval]) -> None:
        """Records calls that wait for a decision."""

    async def of_turn(self, tenant_id: str, session_id: str, turn_id: str) -> list[Approval]:
        """Every approval of one turn, oldest first."""

    async def decide(
        self,
        tenant_id: str,
        session_id: str,
        turn_id: str,
        tool_call_id: str,
        status: ApprovalStatus,
        reason: str,
        now: datetime,
    ) -> None:
        """Records the decision on one call."""

    async def close_turn(
        self, tenant_id: str, session_id: str, turn_id: str, now: datetime
    ) -> None:
        """Closes what the turn still waits on (it ended without them)."""

    async def expired(self, now: datetime, limit: int) -> list[tuple[str, Approval]]:
        """Pending approvals, of any tenant, whose time ran out; with their tenant."""

    async def next_expiry(self) -> datetime | None:
        """When the first pending approval (of any tenant) runs out of time, if any does."""


class RateRepo(Protocol):
    """Tenants' token buckets; callers hold the tenant's lock while they read and write."""

    async def get(self, tenant_id: str, name: str) -> Bucket | None:
        """The bucket's last state, if it was ever used."""

    async def put(self, tenant_id: str, name: str, bucket: Bucket) -> None:
        """Stores the bucket's new state."""


class QueueRepo(Protocol):
    """Turns waiting behind their session's active turn (the caller holds its row lock)."""

    async def add(self, tenant_id: str, entry: QueuedTurn) -> None:
        """Stores entry at its position; a request_id the session's queue holds is
        AlreadyExists."""

    async def entries(self, tenant_id: str, session_id: str) -> list[QueuedTurn]:
        """The session's queue, head first."""

    async def by_request(
        self, tenant_id: str, session_id: str, request_id: str
    ) -> QueuedTurn | None:
        """The queued turn a request_id asked for, if it still waits."""

    async def remove(self, tenant_id: str, session_id: str, position: int) -> None:
        """Takes one entry out of the queue."""

    async def clear(self, tenant_id: str, session_id: str) -> int:
        """Drops the session's whole queue; returns how many entries went."""


class SessionUoW(Transaction, Protocol):
    """One SessionService transaction and the repositories that work inside it."""

    @property
    def sessions(self) -> SessionRepo:
        """Sessions."""

    @property
    def messages(self) -> MessageRepo:
        """Transcripts."""

    @property
    def turns(self) -> TurnRepo:
        """Turns."""

    @property
    def events(self) -> EventRepo:
        """Event logs."""

    @property
    def rates(self) -> RateRepo:
        """Rate buckets."""

    @property
    def idempotency(self) -> IdempotencyRepo:
        """Stored first responses."""

    @property
    def approvals(self) -> ApprovalRepo:
        """Approvals of waiting turns."""

    @property
    def queue(self) -> QueueRepo:
        """Turns waiting behind the active one."""


class SessionUoWFactory(Protocol):
    """Opens a unit of work; one that will write says so up front."""

    def __call__(self, write: bool = False) -> SessionUoW:
        """A new, not yet entered unit of work."""

"""An in-memory SessionService unit of work, for unit tests of the use cases without I/O.

It keeps the rules the SQL storage keeps and the use cases rely on: a session id is unique
per tenant; a transcript message, an event and a turn are unique at their key; a turn's
request_id is unique per session (AlreadyExists TURN_REQUEST_ID_TAKEN, as the database's
unique index makes it); a request_id holds one fingerprint; deleting a session deletes its
transcript, turns and log; and nothing written, nor announced, is visible to others until
`commit()`. Writers run one at a time, as on SQLite; a read unit may not write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime

from session_service.ports import (
    ApprovalRepo,
    EventRepo,
    MessageRepo,
    QueueRepo,
    RateRepo,
    SessionRepo,
    TurnRepo,
)
from session_service.prepare.model import PreparedBundle
from session_service.prepare.overrides import refused
from session_service.sessions.model import (
    OPEN_STATUSES,
    Message,
    Session,
    storable,
    storable_message,
)
from session_service.turns import log
from session_service.turns.engine import TurnJob
from session_service.turns.log import NextTurn
from session_service.turns.model import (
    DELTA_KINDS,
    Approval,
    ApprovalRequested,
    ApprovalStatus,
    Event,
    Turn,
    TurnStatus,
    storable_body,
)
from session_service.turns.queue import QueuedTurn
from session_service.turns.signals import CANCEL_CHANNEL, EVENTS_CHANNEL, events_payload, log_key
from shared.clock import utcnow
from shared.errors import AlreadyExists, FieldViolation
from shared.idempotency import IdempotencyRepo
from shared.listing import Condition
from shared.quotas import Bucket
from shared.visibility import Viewer
from tests.unit.fake_storage import FakeDatabase, FakeIdempotency, FakeUnit, Keys, holds


class DuplicateKey(Exception):
    """A write the database's primary key refuses (an IntegrityError there)."""


@dataclasses.dataclass
class State:
    """Everything stored, as one committed snapshot."""

    sessions: dict[tuple[str, str], Session] = dataclasses.field(default_factory=dict)
    messages: dict[tuple[str, str, int], Message] = dataclasses.field(default_factory=dict)
    turns: dict[tuple[str, str, str], Turn] = dataclasses.field(default_factory=dict)
    events: dict[tuple[str, str, int], Event] = dataclasses.field(default_factory=dict)
    rates: dict[tuple[str, str], Bucket] = dataclasses.field(default_factory=dict)
    keys: Keys = dataclasses.field(default_factory=dict)
    approvals: dict[tuple[str, str, str, str], Approval] = dataclasses.field(default_factory=dict)
    queue: dict[tuple[str, str, int], QueuedTurn] = dataclasses.field(default_factory=dict)

    def copy(self) -> State:
        """A working copy; values are frozen, so copying the containers is enough."""
        return State(
            dict(self.sessions),
            dict(self.messages),
            dict(self.turns),
            dict(self.events),
            dict(self.rates),
            dict(self.keys),
            dict(self.approvals),
            queue=dict(self.queue),
        )


class FakeSessionDatabase(FakeDatabase[State]):
    """The committed state, shared by every unit of work opened on it."""

    def __init__(self) -> None:
        super().__init__(State())
        # (channel, payload) of every announcement committed, in order (the NOTIFYs).
        self.announced: list[tuple[str, str]] = []

    def unit_of_work(self, write: bool = False) -> FakeSessionUnitOfWork:
        """A SessionUoWFactory over this database."""
        return FakeSessionUnitOfWork(self, write=write)

    def events(self, tenant_id: str, session_id: str) -> list[Event]:
        """The committed log of a session, in order."""
        found = [
            e
            for (tenant, sid, _), e in self.state.events.items()
            if (tenant, sid) == (tenant_id, session_id)
        ]
        return sorted(found, key=lambda e: e.sequence)

    def turn(self, tenant_id: str, session_id: str, turn_id: str) -> Turn | None:
        """A committed turn."""
        return self.state.turns.get((tenant_id, session_id, turn_id))


def _matches(session: Session, condition: Condition) -> bool:
    value = condition.value
    column: str | None
    if condition.field == "config_id":
        column = session.config_id
    elif condition.field == "status":
        column = session.status.value
        value = value.upper().removeprefix("SESSION_STATUS_")
    else:
        column = session.tags.get(condition.field.removeprefix("tags."))
    return holds(column, value, condition)


class FakeSessionRepo:
    """Sessions in a unit's working copy."""

    def __init__(self, unit: FakeSessionUnitOfWork) -> None:
        self._unit = unit

    @property
    def _state(self) -> State:
        return self._unit.work

    async def lock_tenant(self, tenant_id: str, scope: str) -> None:
        self._unit.database.locks.append((tenant_id, scope))

    async def get(
        self, tenant_id: str, session_id: str, *, for_update: bool = False
    ) -> Session | None:
        return self._state.sessions.get((tenant_id, session_id))

    async def insert(self, tenant_id: str, session: Session) -> int:
        # The write lock stands in for the count row's lock: units that write go one by one.
        self._unit.writing()
        key = (tenant_id, session.session_id)
        if key in self._state.sessions:
            raise AlreadyExists(
                f"Session {session.session_id!r} exists already.",
                reason="SESSION_ALREADY_EXISTS",
                resource_type="Session",
                resource_name=session.session_id,
            )
        self._state.sessions[key] = self._stored(session)
        return sum(1 for tenant, _ in self._state.sessions if tenant == tenant_id)

    async def save(self, tenant_id: str, session: Session) -> None:
        self._unit.writing()
        key = (tenant_id, session.session_id)
        current = self._state.sessions.get(key)
        assert current is not None, "save needs an existing session"
        self._state.sessions[key] = dataclasses.replace(
            self._stored(session),
            create_time=current.create_time,
            config_id=current.config_id,
            # Only compaction writes this column.
            compacted_through=current.compacted_through,
        )

    @staticmethod
    def _stored(session: Session) -> Session:
        return dataclasses.replace(
            session,
            tags=storable(dict(session.tags)),
            error_message=storable(session.error_message),
        )

    async def delete(self, tenant_id: str, session_id: str) -> None:
        self._unit.writing()
        state = self._state
        owner = (tenant_id, session_id)
        state.messages = {k: v for k, v in state.messages.items() if k[:2] != owner}
        state.turns = {k: v for k, v in state.turns.items() if k[:2] != owner}
        state.events = {k: v for k, v in state.events.items() if k[:2] != owner}
        state.approvals = {k: v for k, v in state.approvals.items() if k[:2] != owner}
        state.queue = {k: v for k, v in state.queue.items() if k[:2] != owner}
        state.sessions.pop(owner, None)

    async def idle(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        found = sorted(
            (s.idle_expire_time, key)
            for key, s in self._state.sessions.items()
            if s.idle_at(now) and s.idle_expire_time is not None
        )
        return [key for _, key in found[:limit]]

    async def deletable(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        found = sorted(
            (s.delete_time, key)
            for key, s in self._state.sessions.items()
            if s.deletable_at(now) and s.delete_time is not None
        )
        return [key for _, key in found[:limit]]

    async def next_lifetime_deadline(self) -> datetime | None:
        times = [
            s.idle_expire_time if s.status in OPEN_STATUSES else s.delete_time
            for s in self._state.sessions.values()
            if not s.active_turn_id or s.status not in OPEN_STATUSES
        ]
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def _matching(self, tenant_id: str, conditions: Sequence[Condition]) -> list[Session]:
        found = [
            s
            for (tenant, _), s in self._state.sessions.items()
            if tenant == tenant_id and all(_matches(s, c) for c in conditions)
        ]
        return sorted(found, key=lambda s: (s.create_time, s.session_id))

    async def page(
        self,
        tenant_id: str,
        conditions: Sequence[Condition],
        after: tuple[str, str] | None,
        limit: int,
        *,
        viewer: Viewer | None = None,
    ) -> list[Session]:
        found = [
            s
            for s in self._matching(tenant_id, conditions)
            if viewer is None or viewer.may_see(s.owner, s.visibility, s.team)
        ]
        if after is not None:
            position = (datetime.fromisoformat(after[0]), after[1])
            found = [s for s in found if (s.create_time, s.session_id) > position]
        return found[:limit]

    async def count(
        self, tenant_id: str, conditions: Sequence[Condition], *, viewer: Viewer | None = None
    ) -> int:
        return len(
            [
                s
                for s in self._matching(tenant_id, conditions)
                if viewer is None or viewer.may_see(s.owner, s.visibility, s.team)
            ]
        )


class FakeMessageRepo:
    """Transcripts in a unit's working copy."""

    def __init__(self, unit: FakeSessionUnitOfWork) -> None:
        self._unit = unit

    async def append(self, tenant_id: str, session_id: str, message: Message) -> None:
        self._unit.writing()
        key = (tenant_id, session_id, message.sequence)
        if key in self._unit.work.messages:
            raise DuplicateKey(f"message {key} exists already")
        self._unit.work.messages[key] = storable_message(message)

    async def page(
        self, tenant_id: str, session_id: str, after_sequence: int, limit: int
    ) -> list[Message]:
        found = [
            m
            for (tenant, sid, sequence), m in self._unit.work.messages.items()
            if (tenant, sid) == (tenant_id, session_id) and sequence > after_sequence
        ]
        return sorted(found, key=lambda m: m.sequence)[:limit]

    async def at(self, tenant_id: str, session_id: str, sequence: int) -> Message | None:
        return self._unit.work.messages.get((tenant_id, session_id, sequence))

    async def remove_after(self, tenant_id: str, session_id: str, sequence: int) -> int:
        self._unit.writing()
        doomed = [
            key
            for key in self._unit.work.messages
            if key[:2] == (tenant_id, session_id) and key[2] > sequence
        ]
        for key in doomed:
            del self._unit.work.messages[key]
        return len(doomed)


class FakeTurnRepo:
    """Turns in a unit's working copy."""

    def __init__(self, unit: FakeSessionUnitOfWork) -> None:
        self._unit = unit

    @property
    def _turns(self) -> dict[tuple[str, str, str], Turn]:
        return self._unit.work.turns

    async def get(self, tenant_id: str, session_id: str, turn_id: str) -> Turn | None:
        return self._turns.get((tenant_id, session_id, turn_id))

    async def by_request(self, tenant_id: str, session_id: str, request_id: str) -> Turn | None:
        return next(
            (
                t
                for (tenant, sid, _), t in self._turns.items()
                if (tenant, sid) == (tenant_id, session_id)
                and request_id
                and t.request_id == request_id
            ),
            None,
        )

    async def insert(self, tenant_id: str, turn: Turn) -> None:
        self._unit.writing()
        key = (tenant_id, turn.session_id, turn.turn_id)
        if key in self._turns:
            raise DuplicateKey(f"turn {key} exists already")
        if turn.request_id and await self.by_request(tenant_id, turn.session_id, turn.request_id):
            raise AlreadyExists(
                f"A turn with request_id {turn.request_id!r} exists already.",
                reason="TURN_REQUEST_ID_TAKEN",
            )
        self._turns[key] = turn

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
        self._unit.writing()
        key = (tenant_id, session_id, turn_id)
        turn = self._turns.get(key)
        if turn is None:
            return
        self._turns[key] = dataclasses.replace(
            turn,
            status=turn.status if status is None else status,
            last_sequence=turn.last_sequence if last_sequence is None else last_sequence,
            cancel_requested=(
                turn.cancel_requested if cancel_requested is None else cancel_requested
            ),
            end_time=turn.end_time if end_time is None else end_time,
            lease_expires=turn.lease_expires if lease_expires is None else lease_expires,
        )

    async def request_cancel(self, tenant_id: str, session_id: str, turn_id: str) -> None:
        await self.update(tenant_id, session_id, turn_id, cancel_requested=True)
        self._unit.announce(CANCEL_CHANNEL, turn_id)

    async def renew(
        self, tenant_id: str, session_id: str, turn_id: str, lease_expires: datetime
    ) -> bool:
        self._unit.writing()
        key = (tenant_id, session_id, turn_id)
        turn = self._turns.get(key)
        if turn is None or turn.status is not TurnStatus.RUNNING:
            return False
        self._turns[key] = dataclasses.replace(turn, lease_expires=lease_expires)
        return True

    async def of_sessions(self, tenant_id: str, turns: Mapping[str, str]) -> dict[str, Turn]:
        found: dict[str, Turn] = {}
        for session_id, turn_id in turns.items():
            turn = self._turns.get((tenant_id, session_id, turn_id))
            if turn is not None:
                found[session_id] = turn
        return found

    async def cancel_requested(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        turn = self._turns.get((tenant_id, session_id, turn_id))
        return turn is not None and turn.cancel_requested

    async def count_running(self, tenant_id: str, now: datetime) -> int:
        return sum(
            1
            for (tenant, _, _), t in self._turns.items()
            if tenant == tenant_id and t.status is TurnStatus.RUNNING and t.lease_expires > now
        )

    async def running(self) -> list[tuple[str, Turn]]:
        return [
            (tenant, t)
            for (tenant, _, _), t in self._turns.items()
            if t.status is TurnStatus.RUNNING
        ]


class FakeEventRepo:
    """Event logs in a unit's working copy."""

    def __init__(self, unit: FakeSessionUnitOfWork) -> None:
        self._unit = unit

    async def append(
        self, tenant_id: str, session_id: str, events: Sequence[Event], origin: str
    ) -> None:
        self._unit.writing()
        if not events:
            return
        log = self._unit.work.events
        for event in events:
            key = (tenant_id, session_id, event.sequence)
            if key in log:
                raise DuplicateKey(f"event {key} exists already")
            log[key] = dataclasses.replace(event, body=storable_body(event.body))
        self._unit.announce(
            EVENTS_CHANNEL,
            events_payload(log_key(tenant_id, session_id), events[-1].sequence, origin),
        )

    async def after(
        self, tenant_id: str, session_id: str, after_sequence: int, limit: int
    ) -> list[Event]:
        found = [
            e
            for (tenant, sid, sequence), e in self._unit.work.events.items()
            if (tenant, sid) == (tenant_id, session_id) and sequence > after_sequence
        ]
        return sorted(found, key=lambda e: e.sequence)[:limit]

    async def at(self, tenant_id: str, session_id: str, sequence: int) -> Event | None:
        return self._unit.work.events.get((tenant_id, session_id, sequence))

    async def compact(self, tenant_id: str, session_id: str, through: int) -> int:
        self._unit.writing()
        work = self._unit.work
        doomed = [
            key
            for key, event in work.events.items()
            if key[:2] == (tenant_id, session_id)
            and key[2] <= through
            and event.kind in DELTA_KINDS
        ]
        for key in doomed:
            del work.events[key]
        session = work.sessions.get((tenant_id, session_id))
        if session is not None and session.compacted_through < through:
            work.sessions[(tenant_id, session_id)] = dataclasses.replace(
                session, compacted_through=through
            )
        return len(doomed)

    def _due(self) -> list[tuple[str, str, Turn]]:
        """Ended turns whose deltas are still kept, with their tenant and session."""
        work = self._unit.work
        return [
            (tenant, sid, turn)
            for (tenant, sid, _), turn in work.turns.items()
            if turn.end_time is not None
            and (tenant, sid) in work.sessions
            and turn.last_sequence > work.sessions[(tenant, sid)].compacted_through
        ]

    async def compactable(self, ended_before: datetime, limit: int) -> list[tuple[str, str, int]]:
        last: dict[tuple[str, str], int] = {}
        for tenant, sid, turn in self._due():
            assert turn.end_time is not None
            if turn.end_time <= ended_before:
                last[(tenant, sid)] = max(last.get((tenant, sid), 0), turn.last_sequence)
        return [(tenant, sid, through) for (tenant, sid), through in last.items()][:limit]

    async def next_compactable(self) -> datetime | None:
        ends = [turn.end_time for _, _, turn in self._due() if turn.end_time is not None]
        return min(ends, default=None)


class FakeQueueRepo:
    """Turn queues in a unit's working copy."""

    def __init__(self, unit: FakeSessionUnitOfWork) -> None:
        self._unit = unit

    async def add(self, tenant_id: str, entry: QueuedTurn) -> None:
        self._unit.writing()
        key = (tenant_id, entry.session_id, entry.position)
        if key in self._unit.work.queue:
            raise DuplicateKey(f"queue entry {key} exists already")
        if entry.request_id and await self.by_request(
            tenant_id, entry.session_id, entry.request_id
        ):
            raise AlreadyExists(
                f"A turn with request_id {entry.request_id!r} is queued already.",
                reason="TURN_REQUEST_ID_TAKEN",
            )
        self._unit.work.queue[key] = dataclasses.replace(
            entry,
            content=storable(entry.content),
            turn_context=storable(dict(entry.turn_context)),
        )

    async def entries(self, tenant_id: str, session_id: str) -> list[QueuedTurn]:
        found = [
            e
            for (tenant, sid, _), e in self._unit.work.queue.items()
            if (tenant, sid) == (tenant_id, session_id)
        ]
        return sorted(found, key=lambda e: e.position)

    async def by_request(
        self, tenant_id: str, session_id: str, request_id: str
    ) -> QueuedTurn | None:
        return next(
            (e for e in await self.entries(tenant_id, session_id) if e.request_id == request_id),
            None,
        )

    async def remove(self, tenant_id: str, session_id: str, position: int) -> None:
        self._unit.writing()
        self._unit.work.queue.pop((tenant_id, session_id, position), None)

    async def clear(self, tenant_id: str, session_id: str) -> int:
        self._unit.writing()
        doomed = [k for k in self._unit.work.queue if k[:2] == (tenant_id, session_id)]
        for key in doomed:
            del self._unit.work.queue[key]
        return len(doomed)


class FakeRateRepo:
    """Token buckets in a unit's working copy."""

    def __init__(self, unit: FakeSessionUnitOfWork) -> None:
        self._unit = unit

    async def get(self, tenant_id: str, name: str) -> Bucket | None:
        return self._unit.work.rates.get((tenant_id, name))

    async def put(self, tenant_id: str, name: str, bucket: Bucket) -> None:
        self._unit.writing()
        self._unit.work.rates[(tenant_id, name)] = bucket


class FakeApprovalRepo:
    """Approvals in a unit's working copy."""

    def __init__(self, unit: FakeSessionUnitOfWork) -> None:
        self._unit = unit

    async def add(self, tenant_id: str, approvals: Sequence[Approval]) -> None:
        self._unit.writing()
        for a in approvals:
            key = (tenant_id, a.session_id, a.turn_id, a.tool_call_id)
            if key in self._unit.work.approvals:
                raise DuplicateKey(f"approval {key} exists already")
            self._unit.work.approvals[key] = a

    async def of_turn(self, tenant_id: str, session_id: str, turn_id: str) -> list[Approval]:
        found = [
            a
            for (tenant, sid, tid, _), a in self._unit.work.approvals.items()
            if (tenant, sid, tid) == (tenant_id, session_id, turn_id)
        ]
        return sorted(found, key=lambda a: a.create_time)

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
        self._unit.writing()
        key = (tenant_id, session_id, turn_id, tool_call_id)
        found = self._unit.work.approvals.get(key)
        if found is not None:
            self._unit.work.approvals[key] = dataclasses.replace(
                found, status=status, reason=storable(reason), decide_time=now
            )

    async def close_turn(
        self, tenant_id: str, session_id: str, turn_id: str, now: datetime
    ) -> None:
        self._unit.writing()
        for a in await self.of_turn(tenant_id, session_id, turn_id):
            if a.status is ApprovalStatus.PENDING:
                key = (tenant_id, session_id, turn_id, a.tool_call_id)
                self._unit.work.approvals[key] = dataclasses.replace(
                    a, status=ApprovalStatus.CLOSED, decide_time=now
                )

    async def expired(self, now: datetime, limit: int) -> list[tuple[str, Approval]]:
        found = [
            (tenant, a)
            for (tenant, _, _, _), a in self._unit.work.approvals.items()
            if a.status is ApprovalStatus.PENDING
            and a.expire_time is not None
            and a.expire_time <= now
        ]
        return sorted(found, key=lambda pair: pair[1].expire_time or now)[:limit]

    async def next_expiry(self) -> datetime | None:
        times = [
            a.expire_time
            for a in self._unit.work.approvals.values()
            if a.status is ApprovalStatus.PENDING and a.expire_time is not None
        ]
        return min(times, default=None)


class FakeSessionUnitOfWork(FakeUnit[State]):
    """One SessionService transaction over a working copy of the database's state."""

    database: FakeSessionDatabase

    def __init__(self, database: FakeSessionDatabase, *, write: bool = False) -> None:
        super().__init__(database, write=write)
        # What this unit's writes announce at commit, as (channel, payload).
        self.pending: list[tuple[str, str]] = []

    def announce(self, channel: str, payload: str) -> None:
        """Queues a NOTIFY, sent only if the unit commits."""
        self.writing()
        self.pending.append((channel, payload))

    def _opened(self) -> None:
        self.pending = []

    def _committed(self) -> None:
        self.database.announced.extend(self.pending)
        self.pending = []

    def _closed(self) -> None:
        self.pending = []

    @property
    def sessions(self) -> SessionRepo:
        """Sessions."""
        _ = self.work
        return FakeSessionRepo(self)

    @property
    def messages(self) -> MessageRepo:
        """Transcripts."""
        _ = self.work
        return FakeMessageRepo(self)

    @property
    def turns(self) -> TurnRepo:
        """Turns."""
        _ = self.work
        return FakeTurnRepo(self)

    @property
    def events(self) -> EventRepo:
        """Event logs."""
        _ = self.work
        return FakeEventRepo(self)

    @property
    def approvals(self) -> ApprovalRepo:
        """Approvals of waiting turns."""
        _ = self.work
        return FakeApprovalRepo(self)

    @property
    def queue(self) -> QueueRepo:
        """Turns waiting behind the active one."""
        _ = self.work
        return FakeQueueRepo(self)

    @property
    def rates(self) -> RateRepo:
        """Rate buckets."""
        _ = self.work
        return FakeRateRepo(self)

    @property
    def idempotency(self) -> IdempotencyRepo:
        """Stored first responses."""
        _ = self.work
        return FakeIdempotency(self)


class StubPreparer:
    """Prepares any config: revision 0 means the latest, which is `latest`. It records the
    overrides it is given, and refuses those in `refused` as the Preparer would."""

    def __init__(self, latest: int = 3) -> None:
        self.latest = latest
        self.calls: list[tuple[str, str, int]] = []
        self.overrides: list[str] = []
        self.refused: dict[str, FieldViolation] = {}

    async def prepare(
        self,
        tenant_id: str,
        config_id: str,
        revision: int,
        time_remaining: float | None,
        *,
        overrides: str = "",
    ) -> PreparedBundle:
        self.calls.append((tenant_id, config_id, revision))
        self.overrides.append(overrides)
        if overrides in self.refused:
            raise refused([self.refused[overrides]])
        return PreparedBundle(
            tenant_id=tenant_id,
            config_id=config_id,
            revision=revision or self.latest,
            name=config_id,
            document={},
            masked={},
            instruction="",
            modules=(),
            composed_from=(),
            included_configs=frozenset(),
        )


class RecordingRunner:
    """Stands in for the engine: records the turns it is asked to run and to cancel, and
    runs none of them. With runs_started, a turn it was asked to run counts as running here
    (as on the replica that took it); otherwise only those put in `running` do."""

    def __init__(self, *, runs_started: bool = False) -> None:
        self.jobs: list[TurnJob] = []
        self.cancelled: list[str] = []
        self.running: set[str] = set()
        self._runs_started = runs_started

    def start(self, job: TurnJob) -> None:
        self.jobs.append(job)
        if self._runs_started:
            self.running.add(job.turn_id)

    def start_next(self, follows: NextTurn) -> None:
        self.start(TurnJob.after(follows))

    def runs(self, turn_id: str) -> bool:
        return turn_id in self.running

    def cancel_local(self, turn_id: str) -> bool:
        self.cancelled.append(turn_id)
        return turn_id in self.running


async def pause_on_approvals(
    database: FakeSessionDatabase,
    tenant_id: str,
    session_id: str,
    calls: Mapping[str, datetime | None],
) -> None:
    """Pauses the session's running turn on bash calls (id -> deadline), as the engine
    leaves it: ApprovalRequested events and pending approvals stored, the turn WAITING."""
    now = utcnow()
    async with database.unit_of_work(write=True) as uow:
        session = await uow.sessions.get(tenant_id, session_id, for_update=True)
        assert session is not None
        turn_id = session.active_turn_id
        approvals = [
            Approval(session_id, turn_id, call, "bash", "{}", ApprovalStatus.PENDING, now, due)
            for call, due in calls.items()
        ]
        events = [
            Event(
                session.last_sequence + 1 + index,
                turn_id,
                ApprovalRequested(a.tool_call_id, a.name, a.arguments_json, a.expire_time),
                now,
            )
            for index, a in enumerate(approvals)
        ]
        await log.write(uow, tenant_id, session, events, [], now=now, origin="-", waiting=approvals)
        await uow.commit()

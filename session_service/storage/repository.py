"""Repositories over SessionService's tables. They write, never commit.

Every statement here is a Core statement over the tables (no ORM objects): the session's
identity map stays empty, so nothing read earlier in a unit can shadow what the database holds
now, and the hot paths (create, a turn's reads and writes, the event log) pay for the database
round trip rather than for object bookkeeping. Statements that never change are built once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Executable,
    Table,
    bindparam,
    delete,
    func,
    insert,
    not_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from session_service.sessions.model import (
    Message,
    Role,
    Session,
    Status,
    ToolCall,
    storable,
    storable_message,
)
from session_service.storage import event_codec
from session_service.storage.models import (
    ApprovalRow,
    EventRow,
    MessageRow,
    RateBucketRow,
    SessionRow,
    TenantUsageRow,
    TurnQueueRow,
    TurnRow,
)
from session_service.turns.model import (
    DELTA_KINDS,
    Approval,
    ApprovalStatus,
    Event,
    EventKind,
    Turn,
    TurnStatus,
)
from session_service.turns.queue import QueuedTurn
from session_service.turns.signals import CANCEL_CHANNEL, EVENTS_CHANNEL, events_payload, log_key
from shared.db.tenant_lock import lock_tenant
from shared.errors import AlreadyExists
from shared.listing import Condition, like_pattern
from shared.quotas import Bucket
from shared.visibility import Viewer, visibility_named

_SESSIONS = cast(Table, SessionRow.__table__)
_MESSAGES = cast(Table, MessageRow.__table__)
_TURNS = cast(Table, TurnRow.__table__)
_EVENTS = cast(Table, EventRow.__table__)
_RATES = cast(Table, RateBucketRow.__table__)
_USAGE = cast(Table, TenantUsageRow.__table__)
_APPROVALS = cast(Table, ApprovalRow.__table__)
_QUEUE = cast(Table, TurnQueueRow.__table__)

_SESSION_COLUMNS = (
    _SESSIONS.c.session_id,
    _SESSIONS.c.config_id,
    _SESSIONS.c.config_revision,
    _SESSIONS.c.status,
    _SESSIONS.c.create_time,
    _SESSIONS.c.update_time,
    _SESSIONS.c.version,
    _SESSIONS.c.tags,
    _SESSIONS.c.error_message,
    _SESSIONS.c.message_count,
    _SESSIONS.c.last_sequence,
    _SESSIONS.c.active_turn_id,
    _SESSIONS.c.parent_session_id,
    _SESSIONS.c.agent,
    _SESSIONS.c.display_name,
    _SESSIONS.c.ttl_seconds,
    _SESSIONS.c.delete_after_seconds,
    _SESSIONS.c.last_activity_time,
    _SESSIONS.c.idle_expire_time,
    _SESSIONS.c.delete_time,
    _SESSIONS.c.completion_reason,
    _SESSIONS.c.forked_from_session_id,
    _SESSIONS.c.forked_from_sequence,
    _SESSIONS.c.overrides,
    _SESSIONS.c.queued_turns,
    _SESSIONS.c.compacted_through,
    _SESSIONS.c.owner,
    _SESSIONS.c.visibility,
    _SESSIONS.c.team,
)
_SESSION_KEY = (_SESSIONS.c.tenant_id == bindparam("k_tenant")) & (
    _SESSIONS.c.session_id == bindparam("k_session")
)
_GET_SESSION = select(*_SESSION_COLUMNS).where(_SESSION_KEY)
_GET_SESSION_LOCKED = _GET_SESSION.with_for_update()
_INSERT_SESSION = insert(_SESSIONS)
# The SET clause is the parameters that are not the key: the session's mutable columns.
_SAVE_SESSION = update(_SESSIONS).where(_SESSION_KEY)
_DELETE_SESSION = delete(_SESSIONS).where(_SESSION_KEY)
_OPEN = (Status.CREATED.value, Status.ACTIVE.value)
# Idle sessions: open, between turns, past their idle deadline. Checked again under the row
# lock before anything is done to one.
_IDLE = (
    select(_SESSIONS.c.tenant_id, _SESSIONS.c.session_id)
    .where(
        _SESSIONS.c.idle_expire_time <= bindparam("now"),
        _SESSIONS.c.status.in_(_OPEN),
        _SESSIONS.c.active_turn_id == "",
    )
    .order_by(_SESSIONS.c.idle_expire_time)
    .limit(bindparam("limit"))
)
_DELETABLE = (
    select(_SESSIONS.c.tenant_id, _SESSIONS.c.session_id)
    .where(_SESSIONS.c.delete_time <= bindparam("now"), _SESSIONS.c.status.not_in(_OPEN))
    .order_by(_SESSIONS.c.delete_time)
    .limit(bindparam("limit"))
)
_NEXT_IDLE = select(func.min(_SESSIONS.c.idle_expire_time)).where(
    _SESSIONS.c.status.in_(_OPEN), _SESSIONS.c.active_turn_id == ""
)
_NEXT_DELETE = select(func.min(_SESSIONS.c.delete_time)).where(_SESSIONS.c.status.not_in(_OPEN))
_DELTA_KINDS = tuple(sorted(kind.value for kind in DELTA_KINDS))
_TURNS_OF_SESSION = (_TURNS.c.tenant_id == _SESSIONS.c.tenant_id) & (
    _TURNS.c.session_id == _SESSIONS.c.session_id
)
_DELETE_SESSION_PARTS = tuple(
    delete(table).where(
        table.c.tenant_id == bindparam("k_tenant"), table.c.session_id == bindparam("k_session")
    )
    for table in (_MESSAGES, _TURNS, _EVENTS, _APPROVALS, _QUEUE)
)

_USAGE_KEY = _USAGE.c.tenant_id == bindparam("k_tenant")
_RELEASE_USAGE = (
    update(_USAGE).where(_USAGE_KEY).values(sessions=_USAGE.c.sessions - bindparam("released"))
)

_MESSAGE_COLUMNS = (
    _MESSAGES.c.message_id,
    _MESSAGES.c.role,
    _MESSAGES.c.content,
    _MESSAGES.c.sequence,
    _MESSAGES.c.create_time,
    _MESSAGES.c.tool_calls,
    _MESSAGES.c.tool_call_id,
    _MESSAGES.c.turn_id,
)
_INSERT_MESSAGE = insert(_MESSAGES)
_MESSAGE_AT = select(*_MESSAGE_COLUMNS).where(
    _MESSAGES.c.tenant_id == bindparam("k_tenant"),
    _MESSAGES.c.session_id == bindparam("k_session"),
    _MESSAGES.c.sequence == bindparam("k_sequence"),
)

_TURN_COLUMNS = (
    _TURNS.c.session_id,
    _TURNS.c.turn_id,
    _TURNS.c.request_id,
    _TURNS.c.status,
    _TURNS.c.first_sequence,
    _TURNS.c.last_sequence,
    _TURNS.c.cancel_requested,
    _TURNS.c.runner,
    _TURNS.c.lease_expires,
    _TURNS.c.create_time,
    _TURNS.c.end_time,
)
_TURN_KEY = (
    (_TURNS.c.tenant_id == bindparam("k_tenant"))
    & (_TURNS.c.session_id == bindparam("k_session"))
    & (_TURNS.c.turn_id == bindparam("k_turn"))
)
_GET_TURN = select(*_TURN_COLUMNS).where(_TURN_KEY)
_INSERT_TURN = insert(_TURNS)
# The SET clause is the parameters that are not the key: the fields being changed.
_UPDATE_TURN = update(_TURNS).where(_TURN_KEY)
_RENEW_TURN = (
    update(_TURNS)
    .where(_TURN_KEY, _TURNS.c.status == TurnStatus.RUNNING.value)
    .values(lease_expires=bindparam("new_lease_expires"))
)
_TURN_CANCEL_REQUESTED = select(_TURNS.c.cancel_requested).where(_TURN_KEY)

_INSERT_EVENTS = insert(_EVENTS)

_RATE_KEY = (_RATES.c.tenant_id == bindparam("k_tenant")) & (_RATES.c.name == bindparam("k_name"))
_GET_RATE = select(_RATES.c.tokens, _RATES.c.refreshed_at).where(_RATE_KEY)


@dataclass(frozen=True)
class _Upserts:
    """The statements that need the dialect's INSERT ... ON CONFLICT."""

    # One more session for the tenant: the usage row made or bumped, RETURNING the new count.
    add_session: Executable
    # A rate bucket's new state.
    put_rate: Executable


def _build_upserts(dialect: str) -> _Upserts:
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    one_more = make(_USAGE).values(tenant_id=bindparam("k_tenant"), sessions=1)
    bumped = {"sessions": _USAGE.c.sessions + 1}
    rate = make(_RATES).values(
        tenant_id=bindparam("k_tenant"),
        name=bindparam("k_name"),
        tokens=bindparam("new_tokens"),
        refreshed_at=bindparam("new_refreshed_at"),
    )
    return _Upserts(
        add_session=one_more.on_conflict_do_update(
            index_elements=["tenant_id"], set_=bumped
        ).returning(_USAGE.c.sessions),
        put_rate=rate.on_conflict_do_update(
            index_elements=["tenant_id", "name"],
            set_={"tokens": rate.excluded.tokens, "refreshed_at": rate.excluded.refreshed_at},
        ),
    )


_UPSERTS = {name: _build_upserts(name) for name in ("postgresql", "sqlite")}


def _upserts(session: AsyncSession) -> _Upserts:
    return _UPSERTS[session.get_bind().dialect.name]


def _session(row: Any) -> Session:
    return Session(
        session_id=row.session_id,
        config_id=row.config_id,
        config_revision=row.config_revision,
        status=Status(row.status),
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
        tags=dict(row.tags),
        error_message=row.error_message,
        message_count=row.message_count,
        last_sequence=row.last_sequence,
        active_turn_id=row.active_turn_id,
        parent_session_id=row.parent_session_id,
        agent=row.agent,
        display_name=row.display_name,
        ttl_seconds=row.ttl_seconds,
        delete_after_seconds=row.delete_after_seconds,
        last_activity_time=row.last_activity_time,
        idle_expire_time=row.idle_expire_time,
        delete_time=row.delete_time,
        completion_reason=row.completion_reason,
        forked_from_session_id=row.forked_from_session_id,
        forked_from_sequence=row.forked_from_sequence,
        overrides=row.overrides,
        queued_turns=row.queued_turns,
        compacted_through=row.compacted_through,
        owner=row.owner,
        visibility=visibility_named(row.visibility),
        team=row.team,
    )


def _changeable(session: Session) -> dict[str, Any]:
    """The columns of a session that writes change, as stored (text NUL-free)."""
    return {
        "config_revision": session.config_revision,
        "status": session.status.value,
        "error_message": storable(session.error_message),
        "message_count": session.message_count,
        "last_sequence": session.last_sequence,
        "active_turn_id": session.active_turn_id,
        "display_name": storable(session.display_name),
        "tags": storable(dict(session.tags)),
        "version": session.version,
        "update_time": session.update_time,
        "ttl_seconds": session.ttl_seconds,
        "delete_after_seconds": session.delete_after_seconds,
        "last_activity_time": session.last_activity_time,
        "idle_expire_time": session.idle_expire_time,
        "delete_time": session.delete_time,
        "completion_reason": session.completion_reason,
        "queued_turns": session.queued_turns,
    }


def _message(row: Any) -> Message:
    return Message(
        message_id=row.message_id,
        role=Role(row.role),
        content=row.content,
        sequence=row.sequence,
        create_time=row.create_time,
        tool_calls=tuple(ToolCall(**call) for call in row.tool_calls),
        tool_call_id=row.tool_call_id,
        turn_id=row.turn_id,
    )


class SessionRepository:
    """Sessions, and how many each tenant holds (`session_tenant_usage`).

    The count moves with every insert and delete, in the same transaction, so it always
    equals the tenant's rows as of that transaction. `reserve` takes a slot for an insert to
    come while the count is below a limit; the row lock it takes orders concurrent
    reservations on every replica, so a tenant never ends up over its limit.
    """

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        # Slots this unit reserved and has not used yet, by tenant.

    async def lock_tenant(self, tenant_id: str, scope: str) -> None:
        """Waits for, then holds until the transaction ends, the (scope, tenant) lock."""
        await lock_tenant(self._session, scope, tenant_id)

    async def get(
        self, tenant_id: str, session_id: str, *, for_update: bool = False
    ) -> Session | None:
        """A session; for_update locks its row until the unit ends."""
        result = await self._session.execute(
            _GET_SESSION_LOCKED if for_update else _GET_SESSION,
            {"k_tenant": tenant_id, "k_session": session_id},
        )
        row = result.first()
        return None if row is None else _session(row)

    async def insert(self, tenant_id: str, session: Session) -> int:
        """Stores a new session; returns how many the tenant holds with it.

        The tenant's count row stays locked until the unit ends, so concurrent creates (on
        any replica) count in turn, and a caller over its quota rolls back.
        """
        try:
            await self._session.execute(
                _INSERT_SESSION,
                {
                    "tenant_id": tenant_id,
                    "session_id": session.session_id,
                    "config_id": session.config_id,
                    "create_time": session.create_time,
                    "parent_session_id": session.parent_session_id,
                    "agent": session.agent,
                    "forked_from_session_id": session.forked_from_session_id,
                    "forked_from_sequence": session.forked_from_sequence,
                    # Written once: no later write changes a session's overrides.
                    "overrides": storable(session.overrides),
                    "owner": session.owner,
                    "visibility": session.visibility.value,
                    "team": session.team,
                    **_changeable(session),
                },
            )
        except IntegrityError as exc:
            raise AlreadyExists(
                f"Session {session.session_id!r} exists already.",
                reason="SESSION_ALREADY_EXISTS",
                resource_type="Session",
                resource_name=session.session_id,
            ) from exc
        counted = await self._session.execute(
            _upserts(self._session).add_session, {"k_tenant": tenant_id}
        )
        return int(counted.scalar_one())

    async def save(self, tenant_id: str, session: Session) -> None:
        """Writes the session's mutable state."""
        result = await self._session.execute(
            _SAVE_SESSION,
            {"k_tenant": tenant_id, "k_session": session.session_id, **_changeable(session)},
        )
        assert _rowcount(result) == 1, "save needs an existing session"

    async def delete(self, tenant_id: str, session_id: str) -> None:
        """Removes a session, its transcript, its turns and its event log."""
        key = {"k_tenant": tenant_id, "k_session": session_id}
        for statement in _DELETE_SESSION_PARTS:
            await self._session.execute(statement, key)
        result = await self._session.execute(_DELETE_SESSION, key)
        if _rowcount(result):
            await self._session.execute(_RELEASE_USAGE, {"k_tenant": tenant_id, "released": 1})

    async def idle(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(tenant, session id) of open sessions, of any tenant, idle past their ttl."""
        rows = await self._session.execute(_IDLE, {"now": now, "limit": limit})
        return [(row.tenant_id, row.session_id) for row in rows]

    async def deletable(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(tenant, session id) of ended sessions, of any tenant, due to be deleted."""
        rows = await self._session.execute(_DELETABLE, {"now": now, "limit": limit})
        return [(row.tenant_id, row.session_id) for row in rows]

    async def next_lifetime_deadline(self) -> datetime | None:
        """The earliest idle expiry or deletion time of any session, if there is one."""
        found = [await self._session.scalar(_NEXT_IDLE), await self._session.scalar(_NEXT_DELETE)]
        times = [value for value in found if isinstance(value, datetime)]
        return min(times) if times else None

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
        query = (
            select(*_SESSION_COLUMNS)
            .where(*self._filter(tenant_id, conditions, viewer))
            .order_by(_SESSIONS.c.create_time, _SESSIONS.c.session_id)
            .limit(limit)
        )
        if after is not None:
            time = datetime.fromisoformat(after[0])
            query = query.where(
                (_SESSIONS.c.create_time > time)
                | ((_SESSIONS.c.create_time == time) & (_SESSIONS.c.session_id > after[1]))
            )
        rows = (await self._session.execute(query)).all()
        return [_session(row) for row in rows]

    async def count(
        self, tenant_id: str, conditions: Sequence[Condition], *, viewer: Viewer | None = None
    ) -> int:
        """How many sessions match conditions (and are visible to viewer, when given)."""
        query = (
            select(func.count())
            .select_from(SessionRow)
            .where(*self._filter(tenant_id, conditions, viewer))
        )
        return int(await self._session.scalar(query) or 0)

    @staticmethod
    def _filter(
        tenant_id: str, conditions: Sequence[Condition], viewer: Viewer | None = None
    ) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [SessionRow.tenant_id == tenant_id]
        if viewer is not None:
            # The visibility rule over the sessions table: the one place listings apply it.
            clauses.append(
                viewer.condition(SessionRow.owner, SessionRow.visibility, SessionRow.team)
            )

        for condition in conditions:
            value = condition.value
            if condition.field in _PLAIN_FILTER_COLUMNS:
                column: Any = _PLAIN_FILTER_COLUMNS[condition.field]
            elif condition.field == "status":
                column = SessionRow.status
                value = value.upper().removeprefix("SESSION_STATUS_")
            else:
                column = SessionRow.tags[condition.field.removeprefix("tags.")].as_string()
            if condition.is_pattern:
                clause: ColumnElement[bool] = column.like(like_pattern(value), escape="\\")
            else:
                clause = column == value
            if condition.op == "!=":
                clause = not_(clause) | column.is_(None)
            clauses.append(clause)
        return clauses


# Filter fields compared with their column as they are.
_PLAIN_FILTER_COLUMNS: Mapping[str, Any] = {
    "config_id": SessionRow.config_id,
    "parent_session_id": SessionRow.parent_session_id,
    "agent": SessionRow.agent,
}


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class MessageRepository:
    """Transcripts."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def append(self, tenant_id: str, session_id: str, message: Message) -> None:
        """Adds message at its sequence (the caller holds the session's row lock)."""
        message = storable_message(message)
        await self._session.execute(
            _INSERT_MESSAGE,
            {
                "tenant_id": tenant_id,
                "session_id": session_id,
                "sequence": message.sequence,
                "message_id": message.message_id,
                "role": message.role.value,
                "content": message.content,
                "tool_calls": [
                    {
                        "tool_call_id": c.tool_call_id,
                        "name": c.name,
                        "arguments_json": c.arguments_json,
                    }
                    for c in message.tool_calls
                ],
                "tool_call_id": message.tool_call_id,
                "turn_id": message.turn_id,
                "create_time": message.create_time,
            },
        )

    async def page(
        self, tenant_id: str, session_id: str, after_sequence: int, limit: int
    ) -> list[Message]:
        """Messages after after_sequence, oldest first."""
        rows = (
            await self._session.execute(
                select(*_MESSAGE_COLUMNS)
                .where(
                    _MESSAGES.c.tenant_id == tenant_id,
                    _MESSAGES.c.session_id == session_id,
                    _MESSAGES.c.sequence > after_sequence,
                )
                .order_by(_MESSAGES.c.sequence)
                .limit(limit)
            )
        ).all()
        return [_message(row) for row in rows]

    async def at(self, tenant_id: str, session_id: str, sequence: int) -> Message | None:
        """The message at sequence, if there is one."""
        result = await self._session.execute(
            _MESSAGE_AT, {"k_tenant": tenant_id, "k_session": session_id, "k_sequence": sequence}
        )
        row = result.first()
        return None if row is None else _message(row)

    async def remove_after(self, tenant_id: str, session_id: str, sequence: int) -> int:
        """Removes the messages after sequence from the transcript; returns how many."""
        result = await self._session.execute(
            delete(_MESSAGES).where(
                _MESSAGES.c.tenant_id == tenant_id,
                _MESSAGES.c.session_id == session_id,
                _MESSAGES.c.sequence > sequence,
            )
        )
        return _rowcount(result)


def _turn(row: Any) -> Turn:
    return Turn(
        session_id=row.session_id,
        turn_id=row.turn_id,
        request_id=row.request_id or "",
        status=TurnStatus(row.status),
        first_sequence=row.first_sequence,
        last_sequence=row.last_sequence,
        cancel_requested=row.cancel_requested,
        runner=row.runner,
        lease_expires=row.lease_expires,
        create_time=row.create_time,
        end_time=row.end_time,
    )


class TurnRepository:
    """Turns of sessions."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, tenant_id: str, session_id: str, turn_id: str) -> Turn | None:
        """One turn."""
        result = await self._session.execute(
            _GET_TURN, {"k_tenant": tenant_id, "k_session": session_id, "k_turn": turn_id}
        )
        row = result.first()
        return None if row is None else _turn(row)

    async def by_request(self, tenant_id: str, session_id: str, request_id: str) -> Turn | None:
        """The turn a request_id started, if any."""
        result = await self._session.execute(
            select(*_TURN_COLUMNS).where(
                _TURNS.c.tenant_id == tenant_id,
                _TURNS.c.session_id == session_id,
                _TURNS.c.request_id == request_id,
            )
        )
        row = result.first()
        return None if row is None else _turn(row)

    async def insert(self, tenant_id: str, turn: Turn) -> None:
        """Records a new turn; a concurrent turn with the same request_id is ALREADY_EXISTS."""
        try:
            await self._session.execute(
                _INSERT_TURN,
                {
                    "tenant_id": tenant_id,
                    "session_id": turn.session_id,
                    "turn_id": turn.turn_id,
                    "request_id": turn.request_id or None,
                    "status": turn.status.value,
                    "first_sequence": turn.first_sequence,
                    "last_sequence": turn.last_sequence,
                    "cancel_requested": turn.cancel_requested,
                    "runner": turn.runner,
                    "lease_expires": turn.lease_expires,
                    "create_time": turn.create_time,
                    "end_time": turn.end_time,
                },
            )
        except IntegrityError as exc:
            raise AlreadyExists(
                f"A turn with request_id {turn.request_id!r} exists already.",
                reason="TURN_REQUEST_ID_TAKEN",
            ) from exc

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
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status.value
        if last_sequence is not None:
            changes["last_sequence"] = last_sequence
        if cancel_requested is not None:
            changes["cancel_requested"] = cancel_requested
        if end_time is not None:
            changes["end_time"] = end_time
        if lease_expires is not None:
            changes["lease_expires"] = lease_expires
        if not changes:
            return
        # A turn that is not there is left alone, as before: the UPDATE matches nothing.
        await self._session.execute(
            _UPDATE_TURN,
            {"k_tenant": tenant_id, "k_session": session_id, "k_turn": turn_id, **changes},
        )

    async def request_cancel(self, tenant_id: str, session_id: str, turn_id: str) -> None:
        """Flags the turn to stop and, at commit, tells every replica (it may run on any)."""
        await self.update(tenant_id, session_id, turn_id, cancel_requested=True)
        await announce(self._session, CANCEL_CHANNEL, turn_id)

    async def renew(
        self, tenant_id: str, session_id: str, turn_id: str, lease_expires: datetime
    ) -> bool:
        """Extends a running turn's lease; False when the turn is no longer running."""
        result = await self._session.execute(
            _RENEW_TURN,
            {
                "k_tenant": tenant_id,
                "k_session": session_id,
                "k_turn": turn_id,
                "new_lease_expires": lease_expires,
            },
        )
        return bool(_rowcount(result))

    async def of_sessions(self, tenant_id: str, turns: Mapping[str, str]) -> dict[str, Turn]:
        """The named turn of each session (session id -> turn id), by session id."""
        if not turns:
            return {}
        rows = (
            await self._session.execute(
                select(*_TURN_COLUMNS).where(
                    _TURNS.c.tenant_id == tenant_id,
                    tuple_(_TURNS.c.session_id, _TURNS.c.turn_id).in_(list(turns.items())),
                )
            )
        ).all()
        return {row.session_id: _turn(row) for row in rows}

    async def cancel_requested(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        """Whether someone asked to cancel the turn (read fresh from the database)."""
        value = await self._session.scalar(
            _TURN_CANCEL_REQUESTED,
            {"k_tenant": tenant_id, "k_session": session_id, "k_turn": turn_id},
        )
        return bool(value)

    async def count_running(self, tenant_id: str, now: datetime) -> int:
        """The tenant's turns running now (not those whose replica died and lease ran out)."""
        query = (
            select(func.count())
            .select_from(_TURNS)
            .where(
                _TURNS.c.tenant_id == tenant_id,
                _TURNS.c.status == TurnStatus.RUNNING.value,
                _TURNS.c.lease_expires > now,
            )
        )
        return int(await self._session.scalar(query) or 0)

    async def running(self) -> list[tuple[str, Turn]]:
        """Every turn still marked RUNNING, with its tenant."""
        rows = (
            await self._session.execute(
                select(_TURNS.c.tenant_id, *_TURN_COLUMNS).where(
                    _TURNS.c.status == TurnStatus.RUNNING.value
                )
            )
        ).all()
        return [(row.tenant_id, _turn(row)) for row in rows]


class RateBucketRepository:
    """Tenants' token buckets; callers hold the tenant's lock while they read and write."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, tenant_id: str, name: str) -> Bucket | None:
        """The bucket's last state, if it was ever used."""
        result = await self._session.execute(_GET_RATE, {"k_tenant": tenant_id, "k_name": name})
        row = result.first()
        return None if row is None else Bucket(row.tokens, row.refreshed_at)

    async def put(self, tenant_id: str, name: str, bucket: Bucket) -> None:
        """Stores the bucket's new state."""
        await self._session.execute(
            _upserts(self._session).put_rate,
            {
                "k_tenant": tenant_id,
                "k_name": name,
                "new_tokens": bucket.tokens,
                "new_refreshed_at": bucket.at,
            },
        )


class EventRepository:
    """Sessions' event logs."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def append(
        self, tenant_id: str, session_id: str, events: Sequence[Event], origin: str
    ) -> None:
        """Adds events at their sequences (the caller owns the session's running turn).

        At commit, followers on other replicas learn that the log reached the last of them;
        origin names the replica that hands them to its own followers from memory.
        """
        if not events:
            return
        # A bulk insert of plain rows: the log is the hot path.
        await self._session.execute(
            _INSERT_EVENTS,
            [
                {
                    "tenant_id": tenant_id,
                    "session_id": session_id,
                    "sequence": event.sequence,
                    "turn_id": event.turn_id,
                    "kind": event.kind.value,
                    "payload": storable(event_codec.encode(event.body)),
                    "event_time": event.event_time,
                }
                for event in events
            ],
        )
        await announce(
            self._session,
            EVENTS_CHANNEL,
            events_payload(log_key(tenant_id, session_id), events[-1].sequence, origin),
        )

    async def after(
        self, tenant_id: str, session_id: str, after_sequence: int, limit: int
    ) -> list[Event]:
        """Events after after_sequence, oldest first."""
        rows = await self._session.execute(
            select(
                _EVENTS.c.sequence,
                _EVENTS.c.turn_id,
                _EVENTS.c.kind,
                _EVENTS.c.payload,
                _EVENTS.c.event_time,
            )
            .where(
                _EVENTS.c.tenant_id == tenant_id,
                _EVENTS.c.session_id == session_id,
                _EVENTS.c.sequence > after_sequence,
            )
            .order_by(_EVENTS.c.sequence)
            .limit(limit)
        )
        return [
            Event(sequence, turn_id, event_codec.decode(EventKind(kind), payload), event_time)
            for sequence, turn_id, kind, payload, event_time in rows
        ]

    async def at(self, tenant_id: str, session_id: str, sequence: int) -> Event | None:
        """The event at sequence, if there is one."""
        found = await self.after(tenant_id, session_id, sequence - 1, 1)
        return found[0] if found and found[0].sequence == sequence else None

    async def compact(self, tenant_id: str, session_id: str, through: int) -> int:
        """Removes the deltas up to through and marks the log compacted that far."""
        removed = await self._session.execute(
            delete(_EVENTS).where(
                _EVENTS.c.tenant_id == tenant_id,
                _EVENTS.c.session_id == session_id,
                _EVENTS.c.sequence <= through,
                _EVENTS.c.kind.in_(_DELTA_KINDS),
            )
        )
        # Not a session write: no version, no activity, so no etag or idle deadline moves.
        await self._session.execute(
            update(_SESSIONS)
            .where(
                _SESSIONS.c.tenant_id == tenant_id,
                _SESSIONS.c.session_id == session_id,
                _SESSIONS.c.compacted_through < through,
            )
            .values(compacted_through=through)
        )
        return _rowcount(removed)

    async def compactable(self, ended_before: datetime, limit: int) -> list[tuple[str, str, int]]:
        """(tenant, session, last sequence) of logs, of any tenant, with turns to compact.

        The last sequence is that of the session's latest turn that ended before
        ended_before; its deltas and those of every earlier turn are due.
        """
        rows = await self._session.execute(
            select(_TURNS.c.tenant_id, _TURNS.c.session_id, func.max(_TURNS.c.last_sequence))
            .join(_SESSIONS, _TURNS_OF_SESSION)
            .where(
                _TURNS.c.end_time <= ended_before,
                _TURNS.c.last_sequence > _SESSIONS.c.compacted_through,
            )
            .group_by(_TURNS.c.tenant_id, _TURNS.c.session_id)
            .limit(limit)
        )
        return [(tenant, session, int(last)) for tenant, session, last in rows]

    async def next_compactable(self) -> datetime | None:
        """When the earliest finished turn whose deltas are still kept ended, if any did."""
        found = await self._session.scalar(
            select(func.min(_TURNS.c.end_time))
            .join(_SESSIONS, _TURNS_OF_SESSION)
            .where(
                _TURNS.c.end_time.is_not(None),
                _TURNS.c.last_sequence > _SESSIONS.c.compacted_through,
            )
        )
        return cast(datetime | None, found)


async def announce(session: AsyncSession, channel: str, payload: str) -> None:
    """NOTIFY other replicas at commit (PostgreSQL only; in process the caller wakes readers)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
        )


_APPROVAL_COLUMNS = (
    _APPROVALS.c.tenant_id,
    _APPROVALS.c.session_id,
    _APPROVALS.c.turn_id,
    _APPROVALS.c.tool_call_id,
    _APPROVALS.c.name,
    _APPROVALS.c.arguments_json,
    _APPROVALS.c.status,
    _APPROVALS.c.reason,
    _APPROVALS.c.create_time,
    _APPROVALS.c.expire_time,
    _APPROVALS.c.decide_time,
)
_APPROVAL_TURN = (
    (_APPROVALS.c.tenant_id == bindparam("k_tenant"))
    & (_APPROVALS.c.session_id == bindparam("k_session"))
    & (_APPROVALS.c.turn_id == bindparam("k_turn"))
)
_OF_TURN = select(*_APPROVAL_COLUMNS).where(_APPROVAL_TURN).order_by(_APPROVALS.c.create_time)
_DECIDE = (
    update(_APPROVALS)
    .where(_APPROVAL_TURN, _APPROVALS.c.tool_call_id == bindparam("k_call"))
    .values(
        status=bindparam("new_status"),
        reason=bindparam("new_reason"),
        decide_time=bindparam("now"),
    )
)
_CLOSE_TURN = (
    update(_APPROVALS)
    .where(_APPROVAL_TURN, _APPROVALS.c.status == ApprovalStatus.PENDING.value)
    .values(status=ApprovalStatus.CLOSED.value, decide_time=bindparam("now"))
)
_EXPIRED = (
    select(*_APPROVAL_COLUMNS)
    .where(
        _APPROVALS.c.status == ApprovalStatus.PENDING.value,
        _APPROVALS.c.expire_time <= bindparam("now"),
    )
    .order_by(_APPROVALS.c.expire_time)
    .limit(bindparam("limit"))
)


_NEXT_EXPIRY = select(func.min(_APPROVALS.c.expire_time)).where(
    _APPROVALS.c.status == ApprovalStatus.PENDING.value
)


def _approval(row: Any) -> Approval:
    return Approval(
        session_id=row.session_id,
        turn_id=row.turn_id,
        tool_call_id=row.tool_call_id,
        name=row.name,
        arguments_json=row.arguments_json,
        status=ApprovalStatus(row.status),
        create_time=row.create_time,
        expire_time=row.expire_time,
        reason=row.reason,
        decide_time=row.decide_time,
    )


class ApprovalRepository:
    """Tool calls waiting turns paused for, and the decisions on them."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, tenant_id: str, approvals: Sequence[Approval]) -> None:
        """Records calls that wait for a decision."""
        if not approvals:
            return
        await self._session.execute(
            insert(_APPROVALS),
            [
                {
                    "tenant_id": tenant_id,
                    "session_id": a.session_id,
                    "turn_id": a.turn_id,
                    "tool_call_id": a.tool_call_id,
                    "name": storable(a.name),
                    "arguments_json": storable(a.arguments_json),
                    "status": a.status.value,
                    "reason": storable(a.reason),
                    "create_time": a.create_time,
                    "expire_time": a.expire_time,
                    "decide_time": a.decide_time,
                }
                for a in approvals
            ],
        )

    async def of_turn(self, tenant_id: str, session_id: str, turn_id: str) -> list[Approval]:
        """Every approval of one turn, oldest first."""
        rows = await self._session.execute(
            _OF_TURN, {"k_tenant": tenant_id, "k_session": session_id, "k_turn": turn_id}
        )
        return [_approval(row) for row in rows]

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
        await self._session.execute(
            _DECIDE,
            {
                "k_tenant": tenant_id,
                "k_session": session_id,
                "k_turn": turn_id,
                "k_call": tool_call_id,
                "new_status": status.value,
                "new_reason": storable(reason),
                "now": now,
            },
        )

    async def close_turn(
        self, tenant_id: str, session_id: str, turn_id: str, now: datetime
    ) -> None:
        """Closes what the turn still waits on (it ended without them)."""
        await self._session.execute(
            _CLOSE_TURN,
            {"k_tenant": tenant_id, "k_session": session_id, "k_turn": turn_id, "now": now},
        )

    async def expired(self, now: datetime, limit: int) -> list[tuple[str, Approval]]:
        """Pending approvals, of any tenant, whose time ran out; with their tenant."""
        rows = await self._session.execute(_EXPIRED, {"now": now, "limit": limit})
        return [(row.tenant_id, _approval(row)) for row in rows]

    async def next_expiry(self) -> datetime | None:
        """When the first pending approval (of any tenant) runs out of time, if any does."""
        value = await self._session.scalar(_NEXT_EXPIRY)
        return value if isinstance(value, datetime) else None


_QUEUE_KEY = (_QUEUE.c.tenant_id == bindparam("k_tenant")) & (
    _QUEUE.c.session_id == bindparam("k_session")
)
_QUEUE_COLUMNS = (
    _QUEUE.c.session_id,
    _QUEUE.c.position,
    _QUEUE.c.turn_id,
    _QUEUE.c.message_id,
    _QUEUE.c.request_id,
    _QUEUE.c.content,
    _QUEUE.c.turn_context,
    _QUEUE.c.rolls_back,
    _QUEUE.c.create_time,
)
_QUEUE_ENTRIES = select(*_QUEUE_COLUMNS).where(_QUEUE_KEY).order_by(_QUEUE.c.position)
_QUEUE_BY_REQUEST = select(*_QUEUE_COLUMNS).where(
    _QUEUE_KEY, _QUEUE.c.request_id == bindparam("k_request")
)
_QUEUE_REMOVE = delete(_QUEUE).where(_QUEUE_KEY, _QUEUE.c.position == bindparam("k_position"))
_QUEUE_CLEAR = delete(_QUEUE).where(_QUEUE_KEY)


def _queued(row: Any) -> QueuedTurn:
    return QueuedTurn(
        session_id=row.session_id,
        position=row.position,
        turn_id=row.turn_id,
        message_id=row.message_id,
        request_id=row.request_id or "",
        content=row.content,
        create_time=row.create_time,
        turn_context=dict(row.turn_context or {}),
        rolls_back=row.rolls_back,
    )


class QueueRepository:
    """Turns waiting behind their session's active turn (`session_turn_queue`).

    Callers hold the session's row lock, so a request_id taken twice is a caller's retry
    racing itself, which the lock already ordered: the unique index is the last guard.
    """

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, tenant_id: str, entry: QueuedTurn) -> None:
        """Stores entry at its position; a request_id the queue holds is AlreadyExists."""
        try:
            await self._session.execute(
                insert(_QUEUE),
                {
                    "tenant_id": tenant_id,
                    "session_id": entry.session_id,
                    "position": entry.position,
                    "turn_id": entry.turn_id,
                    "message_id": entry.message_id,
                    "request_id": entry.request_id or None,
                    "content": storable(entry.content),
                    "turn_context": storable(dict(entry.turn_context)),
                    "rolls_back": entry.rolls_back,
                    "create_time": entry.create_time,
                },
            )
        except IntegrityError as exc:
            raise AlreadyExists(
                f"A turn with request_id {entry.request_id!r} is queued already.",
                reason="TURN_REQUEST_ID_TAKEN",
            ) from exc

    async def entries(self, tenant_id: str, session_id: str) -> list[QueuedTurn]:
        """The session's queue, head first."""
        rows = await self._session.execute(
            _QUEUE_ENTRIES, {"k_tenant": tenant_id, "k_session": session_id}
        )
        return [_queued(row) for row in rows]

    async def by_request(
        self, tenant_id: str, session_id: str, request_id: str
    ) -> QueuedTurn | None:
        """The queued turn a request_id asked for, if it still waits."""
        result = await self._session.execute(
            _QUEUE_BY_REQUEST,
            {"k_tenant": tenant_id, "k_session": session_id, "k_request": request_id},
        )
        row = result.first()
        return None if row is None else _queued(row)

    async def remove(self, tenant_id: str, session_id: str, position: int) -> None:
        """Takes one entry out of the queue."""
        await self._session.execute(
            _QUEUE_REMOVE,
            {"k_tenant": tenant_id, "k_session": session_id, "k_position": position},
        )

    async def clear(self, tenant_id: str, session_id: str) -> int:
        """Drops the session's whole queue; returns how many entries went."""
        result = await self._session.execute(
            _QUEUE_CLEAR, {"k_tenant": tenant_id, "k_session": session_id}
        )
        return _rowcount(result)

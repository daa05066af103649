"""Repositories over SessionService's tables. They flush, never commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, not_, select, text, tuple_, update
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
    EventRow,
    MessageRow,
    RateBucketRow,
    SessionRow,
    TurnRow,
)
from session_service.turns.model import Event, EventKind, Turn, TurnStatus
from session_service.turns.signals import CANCEL_CHANNEL, EVENTS_CHANNEL, events_payload, log_key
from shared.db.tenant_lock import lock_tenant
from shared.errors import AlreadyExists
from shared.listing import Condition, like_pattern
from shared.quotas import Bucket


def _session(row: SessionRow) -> Session:
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
    )


def _message(row: MessageRow) -> Message:
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
    """Sessions."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock_tenant(self, tenant_id: str, scope: str) -> None:
        """Waits for, then holds until the transaction ends, the (scope, tenant) lock."""
        await lock_tenant(self._session, scope, tenant_id)

    async def get(
        self, tenant_id: str, session_id: str, *, for_update: bool = False
    ) -> Session | None:
        """A session; for_update locks its row until the unit ends."""
        query = select(SessionRow).where(
            SessionRow.tenant_id == tenant_id, SessionRow.session_id == session_id
        )
        if for_update:
            query = query.with_for_update()
        row = await self._session.scalar(query)
        return None if row is None else _session(row)

    async def insert(self, tenant_id: str, session: Session) -> None:
        """Stores a new session."""
        self._session.add(
            SessionRow(
                tenant_id=tenant_id,
                session_id=session.session_id,
                config_id=session.config_id,
                config_revision=session.config_revision,
                status=session.status.value,
                error_message=storable(session.error_message),
                message_count=session.message_count,
                last_sequence=session.last_sequence,
                active_turn_id=session.active_turn_id,
                tags=storable(dict(session.tags)),
                version=session.version,
                create_time=session.create_time,
                update_time=session.update_time,
            )
        )
        try:
            await self._session.flush()
        except IntegrityError as exc:
            raise AlreadyExists(
                f"Session {session.session_id!r} exists already.",
                reason="SESSION_ALREADY_EXISTS",
                resource_type="Session",
                resource_name=session.session_id,
            ) from exc

    async def save(self, tenant_id: str, session: Session) -> None:
        """Writes the session's mutable state."""
        row = await self._session.get(SessionRow, (tenant_id, session.session_id))
        assert row is not None, "save needs an existing session"
        row.config_revision = session.config_revision
        row.status = session.status.value
        row.error_message = storable(session.error_message)
        row.message_count = session.message_count
        row.last_sequence = session.last_sequence
        row.active_turn_id = session.active_turn_id
        row.tags = storable(dict(session.tags))
        row.version = session.version
        row.update_time = session.update_time
        await self._session.flush()

    async def delete(self, tenant_id: str, session_id: str) -> None:
        """Removes a session, its transcript, its turns and its event log."""
        for model in (MessageRow, TurnRow, EventRow):
            await self._session.execute(
                delete(model).where(model.tenant_id == tenant_id, model.session_id == session_id)
            )
        await self._session.execute(
            delete(SessionRow).where(
                SessionRow.tenant_id == tenant_id, SessionRow.session_id == session_id
            )
        )

    async def page(
        self,
        tenant_id: str,
        conditions: Sequence[Condition],
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[Session]:
        """Sessions matching conditions, oldest first, after the (create_time, id) position."""
        query = (
            select(SessionRow)
            .where(*self._filter(tenant_id, conditions))
            .order_by(SessionRow.create_time, SessionRow.session_id)
            .limit(limit)
        )
        if after is not None:
            time = datetime.fromisoformat(after[0])
            query = query.where(
                (SessionRow.create_time > time)
                | ((SessionRow.create_time == time) & (SessionRow.session_id > after[1]))
            )
        rows = (await self._session.scalars(query)).all()
        return [_session(row) for row in rows]

    async def count(self, tenant_id: str, conditions: Sequence[Condition]) -> int:
        """How many sessions match conditions."""
        query = (
            select(func.count()).select_from(SessionRow).where(*self._filter(tenant_id, conditions))
        )
        return int(await self._session.scalar(query) or 0)

    @staticmethod
    def _filter(tenant_id: str, conditions: Sequence[Condition]) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [SessionRow.tenant_id == tenant_id]
        for condition in conditions:
            value = condition.value
            if condition.field == "config_id":
                column: Any = SessionRow.config_id
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


class MessageRepository:
    """Transcripts."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def append(self, tenant_id: str, session_id: str, message: Message) -> None:
        """Adds message at its sequence (the caller holds the session's row lock)."""
        message = storable_message(message)
        self._session.add(
            MessageRow(
                tenant_id=tenant_id,
                session_id=session_id,
                sequence=message.sequence,
                message_id=message.message_id,
                role=message.role.value,
                content=message.content,
                tool_calls=[
                    {
                        "tool_call_id": c.tool_call_id,
                        "name": c.name,
                        "arguments_json": c.arguments_json,
                    }
                    for c in message.tool_calls
                ],
                tool_call_id=message.tool_call_id,
                turn_id=message.turn_id,
                create_time=message.create_time,
            )
        )
        await self._session.flush()

    async def page(
        self, tenant_id: str, session_id: str, after_sequence: int, limit: int
    ) -> list[Message]:
        """Messages after after_sequence, oldest first."""
        rows = (
            await self._session.scalars(
                select(MessageRow)
                .where(
                    MessageRow.tenant_id == tenant_id,
                    MessageRow.session_id == session_id,
                    MessageRow.sequence > after_sequence,
                )
                .order_by(MessageRow.sequence)
                .limit(limit)
            )
        ).all()
        return [_message(row) for row in rows]

    async def at(self, tenant_id: str, session_id: str, sequence: int) -> Message | None:
        """The message at sequence, if there is one."""
        row = await self._session.get(MessageRow, (tenant_id, session_id, sequence))
        return None if row is None else _message(row)


def _turn(row: TurnRow) -> Turn:
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
        row = await self._session.get(TurnRow, (tenant_id, session_id, turn_id))
        return None if row is None else _turn(row)

    async def by_request(self, tenant_id: str, session_id: str, request_id: str) -> Turn | None:
        """The turn a request_id started, if any."""
        row = await self._session.scalar(
            select(TurnRow).where(
                TurnRow.tenant_id == tenant_id,
                TurnRow.session_id == session_id,
                TurnRow.request_id == request_id,
            )
        )
        return None if row is None else _turn(row)

    async def insert(self, tenant_id: str, turn: Turn) -> None:
        """Records a new turn; a concurrent turn with the same request_id is ALREADY_EXISTS."""
        self._session.add(
            TurnRow(
                tenant_id=tenant_id,
                session_id=turn.session_id,
                turn_id=turn.turn_id,
                request_id=turn.request_id or None,
                status=turn.status.value,
                first_sequence=turn.first_sequence,
                last_sequence=turn.last_sequence,
                cancel_requested=turn.cancel_requested,
                runner=turn.runner,
                lease_expires=turn.lease_expires,
                create_time=turn.create_time,
                end_time=turn.end_time,
            )
        )
        try:
            await self._session.flush()
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
        row = await self._session.get(TurnRow, (tenant_id, session_id, turn_id))
        if row is None:
            return
        if status is not None:
            row.status = status.value
        if last_sequence is not None:
            row.last_sequence = last_sequence
        if cancel_requested is not None:
            row.cancel_requested = cancel_requested
        if end_time is not None:
            row.end_time = end_time
        if lease_expires is not None:
            row.lease_expires = lease_expires
        await self._session.flush()

    async def request_cancel(self, tenant_id: str, session_id: str, turn_id: str) -> None:
        """Flags the turn to stop and, at commit, tells every replica (it may run on any)."""
        await self.update(tenant_id, session_id, turn_id, cancel_requested=True)
        await announce(self._session, CANCEL_CHANNEL, turn_id)

    async def renew(
        self, tenant_id: str, session_id: str, turn_id: str, lease_expires: datetime
    ) -> bool:
        """Extends a running turn's lease; False when the turn is no longer running."""
        result = await self._session.execute(
            update(TurnRow)
            .where(
                TurnRow.tenant_id == tenant_id,
                TurnRow.session_id == session_id,
                TurnRow.turn_id == turn_id,
                TurnRow.status == TurnStatus.RUNNING.value,
            )
            .values(lease_expires=lease_expires)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def of_sessions(self, tenant_id: str, turns: Mapping[str, str]) -> dict[str, Turn]:
        """The named turn of each session (session id -> turn id), by session id."""
        if not turns:
            return {}
        rows = (
            await self._session.scalars(
                select(TurnRow).where(
                    TurnRow.tenant_id == tenant_id,
                    tuple_(TurnRow.session_id, TurnRow.turn_id).in_(list(turns.items())),
                )
            )
        ).all()
        return {row.session_id: _turn(row) for row in rows}

    async def cancel_requested(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        """Whether someone asked to cancel the turn (read fresh from the database)."""
        value = await self._session.scalar(
            select(TurnRow.cancel_requested).where(
                TurnRow.tenant_id == tenant_id,
                TurnRow.session_id == session_id,
                TurnRow.turn_id == turn_id,
            )
        )
        return bool(value)

    async def count_running(self, tenant_id: str, now: datetime) -> int:
        """The tenant's turns running now (not those whose replica died and lease ran out)."""
        query = (
            select(func.count())
            .select_from(TurnRow)
            .where(
                TurnRow.tenant_id == tenant_id,
                TurnRow.status == TurnStatus.RUNNING.value,
                TurnRow.lease_expires > now,
            )
        )
        return int(await self._session.scalar(query) or 0)

    async def running(self) -> list[tuple[str, Turn]]:
        """Every turn still marked RUNNING, with its tenant."""
        rows = (
            await self._session.scalars(
                select(TurnRow).where(TurnRow.status == TurnStatus.RUNNING.value)
            )
        ).all()
        return [(row.tenant_id, _turn(row)) for row in rows]


class RateBucketRepository:
    """Tenants' token buckets; callers hold the tenant's lock while they read and write."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, tenant_id: str, name: str) -> Bucket | None:
        """The bucket's last state, if it was ever used."""
        row = await self._session.get(RateBucketRow, (tenant_id, name))
        return None if row is None else Bucket(row.tokens, row.refreshed_at)

    async def put(self, tenant_id: str, name: str, bucket: Bucket) -> None:
        """Stores the bucket's new state."""
        row = await self._session.get(RateBucketRow, (tenant_id, name))
        if row is None:
            row = RateBucketRow(tenant_id=tenant_id, name=name)
            self._session.add(row)
        row.tokens, row.refreshed_at = bucket.tokens, bucket.at
        await self._session.flush()


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
        # A bulk insert of plain rows: the log is the hot path, and ORM objects cost more
        # per row than the database does.
        await self._session.execute(
            insert(EventRow),
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
                EventRow.sequence,
                EventRow.turn_id,
                EventRow.kind,
                EventRow.payload,
                EventRow.event_time,
            )
            .where(
                EventRow.tenant_id == tenant_id,
                EventRow.session_id == session_id,
                EventRow.sequence > after_sequence,
            )
            .order_by(EventRow.sequence)
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


async def announce(session: AsyncSession, channel: str, payload: str) -> None:
    """NOTIFY other replicas at commit (PostgreSQL only; in process the caller wakes readers)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
        )

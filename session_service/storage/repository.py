"""Repositories over SessionService's tables. They flush, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, not_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from session_service.sessions.model import Message, Role, Session, Status, ToolCall
from session_service.storage.models import MessageRow, SessionRow
from shared.errors import AlreadyExists
from shared.listing import Condition, like_pattern


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
                error_message=session.error_message,
                message_count=session.message_count,
                last_sequence=session.last_sequence,
                active_turn_id=session.active_turn_id,
                tags=dict(session.tags),
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
        row.error_message = session.error_message
        row.message_count = session.message_count
        row.last_sequence = session.last_sequence
        row.active_turn_id = session.active_turn_id
        row.tags = dict(session.tags)
        row.version = session.version
        row.update_time = session.update_time
        await self._session.flush()

    async def delete(self, tenant_id: str, session_id: str) -> None:
        """Removes a session and its transcript."""
        await self._session.execute(
            delete(MessageRow).where(
                MessageRow.tenant_id == tenant_id, MessageRow.session_id == session_id
            )
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

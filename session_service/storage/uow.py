"""SessionService's unit of work."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from session_service.storage.models import IdempotencyKey
from session_service.storage.repository import (
    ApprovalRepository,
    EventRepository,
    MessageRepository,
    QueueRepository,
    RateBucketRepository,
    SessionRepository,
    TurnRepository,
)
from shared.db.idempotency import IdempotencyRepository
from shared.db.uow import UnitOfWork


class SessionUnitOfWork(UnitOfWork):
    """One SessionService transaction and the repositories that work inside it."""

    idempotency: IdempotencyRepository[IdempotencyKey]
    sessions: SessionRepository
    messages: MessageRepository
    turns: TurnRepository
    events: EventRepository
    rates: RateBucketRepository
    approvals: ApprovalRepository
    queue: QueueRepository

    def _bind(self, session: AsyncSession) -> None:
        self.idempotency = IdempotencyRepository(session, IdempotencyKey)
        self.sessions = SessionRepository(session)
        self.messages = MessageRepository(session)
        self.turns = TurnRepository(session)
        self.events = EventRepository(session)
        self.rates = RateBucketRepository(session)
        self.approvals = ApprovalRepository(session)
        self.queue = QueueRepository(session)

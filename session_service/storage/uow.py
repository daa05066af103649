"""SessionService's unit of work."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from session_service.storage.models import IdempotencyKey
from shared.db.idempotency import IdempotencyRepository
from shared.db.uow import UnitOfWork


class SessionUnitOfWork(UnitOfWork):
    """One SessionService transaction and the repositories that work inside it."""

    idempotency: IdempotencyRepository[IdempotencyKey]

    def _bind(self, session: AsyncSession) -> None:
        self.idempotency = IdempotencyRepository(session, IdempotencyKey)

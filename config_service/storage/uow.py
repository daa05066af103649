"""ConfigService's unit of work."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from config_service.storage.models import IdempotencyKey
from config_service.storage.repository import ChangeLog, ConfigRepository
from shared.db.idempotency import IdempotencyRepository
from shared.db.uow import UnitOfWork


class ConfigUnitOfWork(UnitOfWork):
    """One ConfigService transaction and the repositories that work inside it.

    It implements `config_service.configs.ports.ConfigUoW`, the only type use cases see;
    the session stays in storage (repositories take tenant locks and announce changes).
    """

    idempotency: IdempotencyRepository[IdempotencyKey]
    configs: ConfigRepository
    changes: ChangeLog

    def _bind(self, session: AsyncSession) -> None:
        self.idempotency = IdempotencyRepository(session, IdempotencyKey)
        self.configs = ConfigRepository(session)
        self.changes = ChangeLog(session)

"""SessionService's tables. Every table carries tenant_id."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.db.idempotency import IdempotencyKeyColumns
from shared.db.metadata import service_metadata


class Base(DeclarativeBase):
    """Declarative base of SessionService's own metadata."""

    metadata = service_metadata()


class IdempotencyKey(IdempotencyKeyColumns, Base):
    """First responses of CreateSession and SendMessage calls that carried a request_id."""

    __tablename__ = "session_idempotency_keys"

"""Stored first responses of requests that carry a `request_id`.

A repeat of the same request returns the stored response and writes nothing else; a repeat
of the id with a different request is refused, since the client reused an id by mistake.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import LargeBinary, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.clock import utcnow
from shared.db.types import UTCDateTime
from shared.errors import Aborted, InvalidArgument
from shared.idempotency import StoredResponse


class IdempotencyKeyColumns:
    """Columns of a service's idempotency table; each service maps it onto its own base."""

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    if TYPE_CHECKING:
        # The mapped subclasses get SQLAlchemy's keyword constructor.
        def __init__(self, **kwargs: Any) -> None: ...


M = TypeVar("M", bound=IdempotencyKeyColumns)


class IdempotencyRepository(Generic[M]):
    """Reads and records first responses in one service's table. Never commits."""

    def __init__(self, session: AsyncSession, model: type[M]) -> None:
        self._session = session
        self._model = model

    async def find(
        self, tenant_id: str, method: str, request_id: str, request_fingerprint: str
    ) -> StoredResponse | None:
        """The stored response of an earlier identical request, if any."""
        row = await self._session.scalar(
            select(self._model).where(
                self._model.tenant_id == tenant_id,
                self._model.method == method,
                self._model.request_id == request_id,
            )
        )
        if row is None:
            return None
        if row.fingerprint != request_fingerprint:
            raise InvalidArgument(
                "request_id was already used for a different request.",
                reason="REQUEST_ID_REUSED",
                metadata={"request_id": request_id},
            )
        return StoredResponse(row.response)

    async def record(
        self,
        tenant_id: str,
        method: str,
        request_id: str,
        request_fingerprint: str,
        response: bytes,
    ) -> None:
        """Stores the first response in the current transaction."""
        self._session.add(
            self._model(
                tenant_id=tenant_id,
                method=method,
                request_id=request_id,
                fingerprint=request_fingerprint,
                response=response,
            )
        )
        try:
            await self._session.flush()
        except IntegrityError as exc:
            # A concurrent duplicate won the race; the caller retries and finds its response.
            raise Aborted(
                "A concurrent request with the same request_id is in progress; retry.",
                reason="REQUEST_ID_CONFLICT",
                metadata={"request_id": request_id},
            ) from exc

"""A per-tenant lock held until the transaction ends, so a quota check and the write it
guards are one step for every replica."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession


async def lock_tenant(session: AsyncSession, scope: str, tenant_id: str) -> None:
    """Waits for, then holds to commit or rollback, the (scope, tenant) lock.

    On PostgreSQL an advisory transaction lock. SQLite write transactions are already one at a
    time (BEGIN IMMEDIATE), so there it is the write unit itself.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    key = func.hashtextextended(f"tandem:{scope}:{tenant_id}", 0)
    await session.execute(select(func.pg_advisory_xact_lock(key)))

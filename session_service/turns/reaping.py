"""Failing a turn whose runner is gone: the rule every reader of a session applies.

The replica running a turn renews its lease. Once the lease has run out nobody runs the turn
any more (its replica died, or lost the database for longer than the lease), so whoever
reads the session next ends the turn with TurnFailed TURN_ABANDONED, under the session's
row lock: followers get a final event and the session takes new turns. A runner that was
only cut off notices at its next write and stops without writing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from session_service.ports import SessionUoW
from session_service.sessions.model import Session
from session_service.turns import log
from session_service.turns.model import TurnFailed, TurnStatus
from session_service.turns.signals import NO_ORIGIN
from shared.clock import utcnow

ABANDONED = "TURN_ABANDONED"


def _nowhere(_turn_id: str) -> bool:
    return False


async def lease_expired(
    uow: SessionUoW, tenant_id: str, session: Session, now: datetime | None = None
) -> bool:
    """Whether the session's active turn has outlived its lease (a read; nothing changes)."""
    if not session.active_turn_id:
        return False
    turn = await uow.turns.get(tenant_id, session.session_id, session.active_turn_id)
    if turn is not None and turn.status is TurnStatus.WAITING:
        # Paused for approvals: nothing runs it, so there is no lease to run out.
        return False
    return (
        turn is None
        or turn.status is not TurnStatus.RUNNING
        or turn.lease_expires <= (now or utcnow())
    )


async def fail_abandoned(
    uow: SessionUoW,
    tenant_id: str,
    session: Session,
    *,
    force: bool = False,
    runs_here: Callable[[str], bool] = _nowhere,
    origin: str = NO_ORIGIN,
    next_lease_seconds: float = log.NEXT_LEASE_SECONDS,
) -> tuple[Session, log.Written | None]:
    """Ends the active turn with TurnFailed if its lease ran out (with force, in any case).

    A turn that runs in this process (runs_here) is left alone: its runner renews the lease
    as soon as it can. The caller holds the session's row lock and commits. A caller that
    hands the returned events (None when nothing was failed) to this replica's followers
    passes its origin; otherwise they learn of them as other replicas' followers do. When a
    queued turn began in its place (`Written.next`), the caller runs it after commit.
    """
    turn_id = session.active_turn_id
    if not turn_id or runs_here(turn_id):
        return session, None
    now = utcnow()
    if not force and not await lease_expired(uow, tenant_id, session, now):
        return session, None
    written = await log.end_turn(
        uow,
        tenant_id,
        session,
        TurnFailed(
            code=ABANDONED,
            message="The replica running this turn stopped before it ended.",
        ),
        TurnStatus.FAILED,
        now=now,
        origin=origin,
        next_lease_seconds=next_lease_seconds,
    )
    return written.session, written

"""Event retention: the deltas of turns that finished long enough ago leave the event log.

A turn's ContentDelta and ThinkingDelta events are what a live client renders; once the
turn is over, its messages in the transcript hold the same text. After the retention period
(`TANDEM_EVENT_RETENTION`) they are removed, and the session remembers how far
(`Session.compacted_through`), so a replay from before that point is OUT_OF_RANGE naming the
first sequence it can start from, instead of a stream with silent holes.

Every replica sweeps; passes on several replicas may pick the same log, and compacting it
twice removes nothing more, so no claim is needed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from session_service.ports import SessionUoWFactory
from session_service.turns import log
from shared.clock import utcnow

# Logs compacted per transaction: each may hold many deltas.
BATCH = 50


class EventRetention:
    """Compacts logs whose turns ended more than `retention` ago."""

    def __init__(self, unit_of_work: SessionUoWFactory, retention: timedelta) -> None:
        self._unit_of_work = unit_of_work
        self._retention = retention

    async def compact(self) -> str:
        """One pass over every due log; a line for the log (empty: nothing was due)."""
        ended_before = utcnow() - self._retention
        logs = removed = 0
        while True:
            async with self._unit_of_work(write=True) as uow:
                due = await uow.events.compactable(ended_before, BATCH)
                for tenant_id, session_id, through in due:
                    removed += await log.compact(uow, tenant_id, session_id, through)
                await uow.commit()
            logs += len(due)
            if len(due) < BATCH:
                break
        if not logs:
            return ""
        return f"compacted {logs} session log(s), removing {removed} delta event(s)"

    async def next_due(self) -> datetime | None:
        """When the next finished turn's deltas fall due, if any are still kept."""
        async with self._unit_of_work() as uow:
            ended = await uow.events.next_compactable()
        return None if ended is None else ended + self._retention

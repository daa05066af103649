"""The turn queue's rules: what SendMessage does when its session is busy (if_busy).

A session runs one turn at a time. A message sent while one runs (or waits for approvals) is
refused (REJECT, the default), or stored in the session's queue: at its tail (ENQUEUE), or at
its head with the running turn asked to stop (INTERRUPT, and ROLLBACK, which also takes the
stopped turn's messages out of the transcript). The queue is a table, so it survives the
client leaving and the replica dying; whoever ends a session's turn begins the queue's head
in the same transaction (`log.append`), so no way of ending a turn can leave it stuck.

Invariant: a session has queued turns only while it has an active turn. Every ending begins
the next one, so a session can never end (those transitions are refused during a turn) or
idle out with turns still queued.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from shared.errors import Aborted, QuotaViolation, ResourceExhausted

DEFAULT_MAX_QUEUED = 8


class IfBusy(Enum):
    """What a SendMessage does when its session already runs a turn."""

    REJECT = "REJECT"
    ENQUEUE = "ENQUEUE"
    INTERRUPT = "INTERRUPT"
    ROLLBACK = "ROLLBACK"


@dataclass(frozen=True)
class QueuedTurn:
    """A turn waiting in its session's queue; it gets turn_id now, its row when it begins."""

    session_id: str
    position: int
    turn_id: str
    message_id: str
    request_id: str
    content: str
    create_time: datetime
    turn_context: Mapping[str, Any] = field(default_factory=dict)
    # ROLLBACK: the running turn whose messages leave the transcript when it ends.
    rolls_back: str = ""


def place(entries: Sequence[QueuedTurn], if_busy: IfBusy) -> int:
    """The position a new entry takes: after the last (ENQUEUE), or before the first."""
    if not entries:
        return 1
    if if_busy is IfBusy.ENQUEUE:
        return max(e.position for e in entries) + 1
    return min(e.position for e in entries) - 1


def turns_ahead(entries: Sequence[QueuedTurn], turn_id: str) -> int:
    """How many turns run before turn_id, the running one included (0: not queued)."""
    ordered = sorted(entries, key=lambda e: e.position)
    for index, entry in enumerate(ordered):
        if entry.turn_id == turn_id:
            return index + 1
    return 0


def check_room(session_id: str, queued: int, limit: int) -> None:
    """RESOURCE_EXHAUSTED when the session's queue already holds limit turns."""
    if queued >= limit:
        raise ResourceExhausted(
            f"The session already has {queued} turns queued (at most {limit}); wait for one "
            "to run, or send with if_busy INTERRUPT.",
            reason="TURN_QUEUE_FULL",
            metadata={"session_id": session_id, "queued_turns": str(queued), "limit": str(limit)},
            violations=[
                QuotaViolation(
                    f"sessions/{session_id}/queued_turns", f"at most {limit} turns may wait"
                )
            ],
        )


def turn_dropped(session_id: str, turn_id: str) -> Aborted:
    """ABORTED TURN_DROPPED: the queued turn will never run (its session went away)."""
    return Aborted(
        f"Queued turn {turn_id!r} was dropped: session {session_id!r} ended or was deleted "
        "before it could run.",
        reason="TURN_DROPPED",
        metadata={"turn_id": turn_id, "session_id": session_id},
    )

"""Event retention through real stubs: finished turns' deltas leave the log, the text stays.

SessionService runs with a short TANDEM_EVENT_RETENTION; its compactor removes the deltas of
a turn once that long has passed since the turn ended. StreamEvents from before the
compacted point is OUT_OF_RANGE naming the first sequence a replay can start from; the
transcript still holds every message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.pair import Stack, running_pair
from tests.support.rpc import detail, error_info, rpc_error
from tests.support.turns import (
    Event,
    active_session,
    assert_gap_free,
    bundle,
    collect,
    kinds,
    send,
    text_of,
    transcript,
)

# Long enough that the first replay below comes well before it, short enough to wait for.
RETENTION_SECONDS = 3.0


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_pair(
        database_url,
        config={"watch_poll_seconds": 0.5},
        session={"event_retention": RETENTION_SECONDS, "event_retention_sweep_seconds": 0.2},
    ) as running:
        yield running


async def replay(stack: Stack, session_id: str, after: int) -> list[Event]:
    """StreamEvents after a sequence, without following: the stored events."""
    return await collect(
        stack.sessions.StreamEvents(
            session_service_pb2.StreamEventsRequest(session_id=session_id, after_sequence=after)
        )
    )


async def compacted_error(stack: Stack, session_id: str) -> grpc.aio.AioRpcError:
    """Replays from 0 until the compactor has been (20 s at most); the error it then gives."""
    async with asyncio.timeout(20):
        while True:
            try:
                await replay(stack, session_id, 0)
            except grpc.aio.AioRpcError as exc:
                return exc
            await asyncio.sleep(0.2)


async def test_deltas_of_a_finished_turn_are_compacted_and_the_transcript_keeps_them(
    stack: Stack,
) -> None:
    session_id = await active_session(stack, bundle({"reply": "alpha beta gamma delta"}))
    first: list[Event] = await collect(send(stack.sessions, session_id, "one"))
    assert kinds(first)[-1] == "turn_completed"
    turn_end = first[-1].sequence

    # Before the retention period: the whole log replays, deltas included.
    before: list[Event] = await replay(stack, session_id, 0)
    assert [e.sequence for e in before] == [e.sequence for e in first]
    assert text_of(before) == "alpha beta gamma delta"

    error = await compacted_error(stack, session_id)
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    info = error_info(error)
    assert info.reason == "EVENTS_COMPACTED"
    assert info.metadata["first_sequence"] == str(turn_end + 1)
    (violation,) = detail(error, error_details_pb2.BadRequest).field_violations
    assert violation.field == "after_sequence"

    # From the compacted point on, a replay works and has no holes.
    assert await replay(stack, session_id, turn_end) == []
    second: list[Event] = await collect(send(stack.sessions, session_id, "two"))
    later: list[Event] = await replay(stack, session_id, turn_end)
    assert later == second
    assert_gap_free(later)
    assert "content_delta" in kinds(later)

    # The first turn's reply is still in the transcript, whole.
    messages = await transcript(stack, session_id)
    assert [m.content for m in messages][:2] == ["one", "alpha beta gamma delta"]

    # A replay from inside the compacted part is refused, however far in.
    inside = await rpc_error(replay(stack, session_id, turn_end - 1))
    assert inside.code() == grpc.StatusCode.OUT_OF_RANGE

"""The in-memory event hub, the NOTIFY payloads that feed it, and the storable-text rule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from session_service.sessions.model import Message, Role, ToolCall, storable, storable_message
from session_service.turns.hub import EventHub, SessionFeed
from session_service.turns.model import (
    ContentDelta,
    Event,
    EventBody,
    TurnFailed,
    TurnStarted,
)
from session_service.turns.signals import (
    Committed,
    TurnSignals,
    events_payload,
    parse_events_payload,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def event(sequence: int, body: EventBody | None = None, turn: str = "t1") -> Event:
    return Event(sequence, turn, body or ContentDelta(f"e{sequence}"), NOW)


def started(turn: str = "t1") -> TurnStarted:
    """The TurnStarted of a turn."""
    return TurnStarted(Message("m-" + turn, Role.USER, "hi", 1, NOW, turn_id=turn), "")


FAILED = TurnFailed("TURN_ABANDONED", "The replica running this turn stopped before it ended.")


def loaded_feed(capacity: int = 2048) -> SessionFeed:
    """A feed after its first full read: the log up to 3, turn t1 running."""
    feed = SessionFeed("tenant/session", capacity)
    mark = feed.refresh_mark()
    feed.load(0, [event(1, started()), event(2), event(3)])
    feed.refreshed(mark)
    return feed


def lease_of(feed: SessionFeed) -> datetime | None:
    return feed.lease_expires


def stale(feed: SessionFeed) -> bool:
    # A call, not the property: the answer changes between asserts.
    return feed.stale


def test_a_feed_serves_what_follows_a_cursor_and_says_when_it_cannot() -> None:
    feed = loaded_feed()
    assert [e.sequence for e in feed.since(0) or []] == [1, 2, 3]
    assert [e.sequence for e in feed.since(2) or []] == [3]
    assert feed.since(3) == []
    assert not stale(feed)
    small = loaded_feed(capacity=2)
    assert small.since(0) is None  # event 1 was let go: that follower reads the database
    assert [e.sequence for e in small.since(1) or []] == [2, 3]


def test_a_feed_takes_only_events_that_follow_on() -> None:
    feed = loaded_feed()
    assert feed.extend([event(2), event(3), event(4)])  # held ones are skipped
    assert feed.last_sequence == 4
    assert not feed.extend([event(6)])  # a gap: held back, and the feed knows it is behind
    assert feed.last_sequence == 4
    assert stale(feed)
    assert feed.extend([event(5), event(6)])
    assert not stale(feed)


def test_the_log_says_which_turn_runs() -> None:
    feed = loaded_feed()
    assert feed.active_turn_id == "t1"
    lease = NOW + timedelta(seconds=15)
    feed.extend([event(4)], lease_expires=lease)
    assert feed.lease_expires == lease
    feed.renewed("other", lease + timedelta(seconds=5))
    assert feed.lease_expires == lease
    feed.extend([event(5, FAILED)])
    assert feed.active_turn_id == ""
    assert lease_of(feed) is None
    feed.extend([event(6, started("t2"), turn="t2")])
    assert feed.active_turn_id == "t2"


def test_a_dirty_feed_is_clean_only_after_a_read_that_started_later() -> None:
    feed = loaded_feed()
    feed.mark_dirty()
    mark = feed.refresh_mark()
    feed.mark_dirty()  # while that read was on its way
    feed.refreshed(mark)
    assert stale(feed)
    feed.refreshed(feed.refresh_mark())
    assert not stale(feed)


async def test_followers_wait_for_a_change_or_their_time() -> None:
    feed = loaded_feed()
    assert not await feed.wait(0.01)
    hub = EventHub()
    attached = hub.attach("tenant/session")
    attached.load(0, [])
    waiting = asyncio.create_task(attached.wait(5))
    await asyncio.sleep(0)
    hub.publish("tenant/session", [event(1, started())])
    assert await waiting
    assert attached.last_sequence == 1


def test_the_hub_keeps_feeds_only_while_someone_follows() -> None:
    hub = EventHub()
    first = hub.attach("a/s")
    second = hub.attach("a/s")
    assert first is second
    assert len(hub) == 1
    hub.publish("b/s", [event(1)])  # nobody follows it: nothing kept
    assert len(hub) == 1
    hub.publish("a/s", [event(7)])  # not loaded yet: it only learns it is behind
    assert first.wanted == 7
    assert stale(first)
    hub.detach(first)
    hub.detach(second)
    assert len(hub) == 0


def test_notify_payloads_carry_key_sequence_and_origin() -> None:
    payload = events_payload("tenant one/session-1", 42, "replica-a")
    assert parse_events_payload(payload) == Committed("tenant one/session-1", 42, "replica-a")
    assert parse_events_payload(events_payload("t/s", 3)) == Committed("t/s", 3, "-")
    assert parse_events_payload("t/s") == Committed("t/s", None)


def test_a_replica_ignores_its_own_notifies() -> None:
    signals = TurnSignals()
    feed = signals.hub.attach("t/s")
    feed.load(0, [])
    feed.refreshed(feed.refresh_mark())
    signals.on_events_payload(events_payload("t/s", 5, signals.origin))
    assert not stale(feed)
    signals.on_events_payload(events_payload("t/s", 5, "another-replica"))
    assert feed.wanted == 5
    assert stale(feed)
    signals.on_events_payload(None)  # reconnected: anything may have been missed
    assert feed.dirty


def test_nul_becomes_the_replacement_character_wherever_it_is() -> None:
    value = {"a\x00": ["x\x00y", ("z\x00",), 3, None, True], "n": {"m": "\x00"}}
    assert storable(value) == {
        "a\ufffd": ["x\ufffdy", ("z\ufffd",), 3, None, True],
        "n": {"m": "\ufffd"},
    }
    assert storable("clean") == "clean"
    message = Message(
        "m1",
        Role.ASSISTANT,
        "bin\x00ary",
        1,
        NOW,
        tool_calls=(ToolCall("c\x00", "read\x00", '{"p": "\\u0000"}'),),
        tool_call_id="x\x00",
    )
    stored = storable_message(message)
    assert (stored.content, stored.tool_call_id) == ("bin\ufffdary", "x\ufffd")
    assert stored.tool_calls == (ToolCall("c\ufffd", "read\ufffd", '{"p": "\\u0000"}'),)
    clean = Message("m2", Role.USER, "hello", 2, NOW)
    assert storable_message(clean) is clean

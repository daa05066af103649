"""This replica's in-memory view of the event logs its clients follow.

A feed exists for each session that has followers here. It holds the session's most recent
committed events, in order and without gaps, and what they imply: which turn runs and until
when its lease holds. Writers on this replica hand a feed their events right after commit,
so followers here are served from memory. What other replicas commit arrives as a NOTIFY
carrying the new last sequence; the feed then knows it is behind, and one of its followers
reads the missing events once for all of them (`TurnService` does the reading; the feed only
says what is missing). A follower that falls behind the feed's memory reads the database on
its own, until it catches up.

Nothing here is ever ahead of the database: a feed only learns of events that were
committed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from datetime import datetime

from session_service.turns.model import Event, EventKind

# Events a feed keeps in memory; a follower further behind reads the database.
FEED_CAPACITY = 2048


class SessionFeed:
    """The committed events of one session that this replica's followers read from memory."""

    def __init__(self, key: str, capacity: int = FEED_CAPACITY) -> None:
        self.key = key
        self._events: deque[Event] = deque(maxlen=capacity)
        # The last committed sequence this feed holds; -1 until it is first loaded.
        self.last_sequence = -1
        # The highest sequence known to be committed (from NOTIFYs and out-of-order hand-offs).
        self.wanted = -1
        self.active_turn_id = ""
        # When the active turn's lease runs out, as last read or renewed; None if unknown.
        self.lease_expires: datetime | None = None
        self.gone = False
        # Bumped when something may have changed that no sequence tells (a reconnect, a
        # lease to check, a safety poll); a refresh that started at or after it clears it.
        self._dirty_mark = 0
        self._clean_mark = -1
        # Every change and every refresh attempt bumps this; followers that queued for
        # the same refresh skip theirs when someone else's ran in between.
        self.version = 0
        self.followers = 0
        self.refreshing = asyncio.Lock()
        # After a failed read (the database is down): no follower reads again before this.
        self.retry_at = 0.0
        self.failures = 0
        self._changed = asyncio.Event()

    @property
    def loaded(self) -> bool:
        """Whether the feed has been read from the database at least once."""
        return self.last_sequence >= 0

    @property
    def dirty(self) -> bool:
        """Whether something changed that only a full read (session and turn too) can tell."""
        return self._dirty_mark > self._clean_mark

    @property
    def stale(self) -> bool:
        """Whether the database may hold something this feed lacks."""
        return not self.loaded or self.wanted > self.last_sequence or self.dirty

    def since(self, cursor: int) -> list[Event] | None:
        """The held events after cursor; None when memory does not reach back that far."""
        if cursor >= self.last_sequence:
            return []
        if not self._events or cursor + 1 < self._events[0].sequence:
            return None
        return list(itertools.islice(self._events, cursor + 1 - self._events[0].sequence, None))

    def mark_dirty(self) -> None:
        """Something may have changed that the feed cannot see: read before trusting it."""
        self._dirty_mark += 1
        self._touch()

    def refresh_mark(self) -> int:
        """Taken when a refresh starts; `refreshed(mark)` then clears what was dirty by then."""
        return self._dirty_mark

    def refreshed(self, mark: int) -> None:
        """A full refresh that started at mark has succeeded."""
        self._clean_mark = max(self._clean_mark, mark)
        self.failures = 0
        self.retry_at = 0.0
        self._touch()

    def want(self, sequence: int) -> None:
        """Sequence is committed (another replica said so): the feed is behind until it has it."""
        if sequence > self.last_sequence and sequence > self.wanted:
            self.wanted = sequence
            self._touch()

    def load(self, after: int, events: Sequence[Event]) -> bool:
        """Starts the feed at the database's events following sequence `after`.

        False (and the feed stale) when they do not follow on.
        """
        self._events.clear()
        self.last_sequence = after
        return self.extend(events)

    def extend(self, events: Sequence[Event], lease_expires: datetime | None = None) -> bool:
        """Adds committed events that follow on; False (and the feed stale) on a gap."""
        added = False
        for event in events:
            if event.sequence <= self.last_sequence:
                continue  # held already (read by a follower before the writer handed it on)
            if event.sequence != self.last_sequence + 1:
                self.want(events[-1].sequence)
                return False
            self._events.append(event)
            self.last_sequence = event.sequence
            self._track(event)
            added = True
        if lease_expires is not None and self.active_turn_id:
            self.lease_expires = lease_expires
        if added:
            self._touch()
        return True

    def set_turn(self, active_turn_id: str, lease_expires: datetime | None) -> None:
        """The running turn and its lease as the database has them now."""
        self.active_turn_id = active_turn_id
        self.lease_expires = lease_expires if active_turn_id else None
        self._touch()

    def renewed(self, turn_id: str, lease_expires: datetime) -> None:
        """The running turn's lease was renewed (by its writer on this replica)."""
        if turn_id == self.active_turn_id:
            self.lease_expires = lease_expires

    def read_done(self) -> None:
        """A read for this feed ended, however it went; followers queued for it skip theirs."""
        self.version += 1

    def failed(self, retry_at: float) -> None:
        """A read for this feed failed; the next waits until retry_at (loop time)."""
        self.failures += 1
        self.retry_at = retry_at
        self._touch()

    def close(self) -> None:
        """The session is gone: wake everyone so they end."""
        self.gone = True
        self._touch()

    def wake(self) -> None:
        """Wakes every follower of the feed so it looks again (the server is draining)."""
        self._touch()

    def _track(self, event: Event) -> None:
        # The log itself says which turn runs: the last one started and not yet ended.
        if event.kind is EventKind.TURN_STARTED:
            self.active_turn_id = event.turn_id
            self.lease_expires = None
        elif event.terminal and event.turn_id == self.active_turn_id:
            self.active_turn_id = ""
            self.lease_expires = None

    def _touch(self) -> None:
        self.version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait(self, seconds: float | None) -> bool:
        """Waits for the next change, at most that many seconds; False when it timed out."""
        ticket = self._changed
        try:
            async with asyncio.timeout(seconds):
                await ticket.wait()
        except TimeoutError:
            return False
        return True


class EventHub:
    """The feeds of the sessions followed on this replica, by log key."""

    def __init__(self, capacity: int = FEED_CAPACITY) -> None:
        self._feeds: dict[str, SessionFeed] = {}
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._feeds)

    def attach(self, key: str) -> SessionFeed:
        """The session's feed, made if it is new, with one more follower."""
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = SessionFeed(key, self._capacity)
        feed.followers += 1
        return feed

    def detach(self, feed: SessionFeed) -> None:
        """One follower fewer; the feed is dropped with its last follower."""
        feed.followers -= 1
        if feed.followers <= 0 and self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]

    def publish(
        self, key: str, events: Sequence[Event], lease_expires: datetime | None = None
    ) -> None:
        """Committed events of the session, handed on by whoever committed them here."""
        feed = self._feeds.get(key)
        if feed is None or not events:
            return
        if feed.loaded:
            feed.extend(events, lease_expires)
        else:
            feed.want(events[-1].sequence)

    def renewed(self, key: str, turn_id: str, lease_expires: datetime) -> None:
        """A running turn's renewed lease."""
        feed = self._feeds.get(key)
        if feed is not None:
            feed.renewed(turn_id, lease_expires)

    def committed(self, key: str, sequence: int | None) -> None:
        """Another replica (or anyone, on PostgreSQL) committed the session's log up to sequence.

        None: unknown, read to find out.
        """
        feed = self._feeds.get(key)
        if feed is None:
            return
        if sequence is None:
            feed.mark_dirty()
        else:
            feed.want(sequence)

    def wake_all(self, *, dirty: bool) -> None:
        """Wakes every follower (draining), and with dirty makes every feed re-read first."""
        for feed in list(self._feeds.values()):
            if dirty:
                feed.mark_dirty()
            else:
                feed.wake()

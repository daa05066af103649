"""FreshReads: one fetch serves a burst, and no caller gets an answer read before it asked."""

from __future__ import annotations

import asyncio

import pytest

from session_service.fresh_reads import FreshReads


class World:
    """A value that changes, and a fetch that reads it when it starts and answers on release."""

    def __init__(self) -> None:
        self.value = 0
        self.started = 0
        self.release = asyncio.Event()
        self.fail_next = False

    async def fetch(self) -> int:
        self.started += 1
        read = self.value  # what the database would answer: the world when the read began
        failing, self.fail_next = self.fail_next, False
        await self.release.wait()
        if failing:
            raise RuntimeError("fetch failed")
        return read


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_alone_each_read_fetches() -> None:
    reads: FreshReads[int] = FreshReads()
    world = World()
    world.release.set()
    assert await reads.read("k", world.fetch) == 0
    world.value = 1
    assert await reads.read("k", world.fetch) == 1
    assert world.started == 2


async def test_a_burst_shares_one_fetch_that_started_after_it_asked() -> None:
    reads: FreshReads[int] = FreshReads()
    world = World()
    first = asyncio.create_task(reads.read("k", world.fetch))
    await settle()
    # A write lands after the first fetch read the world, and these callers saw it finish.
    world.value = 1
    burst = [asyncio.create_task(reads.read("k", world.fetch)) for _ in range(20)]
    await settle()
    assert world.started == 1  # the burst waits for the next fetch
    world.release.set()
    assert await first == 0
    assert await asyncio.gather(*burst) == [1] * 20
    assert world.started == reads.fetches == 2
    # Another key is its own.
    assert await reads.read("other", world.fetch) == 1
    assert reads._slots == {}


async def test_a_waiter_that_gives_up_leaves_the_fetch_to_the_others() -> None:
    reads: FreshReads[int] = FreshReads()
    world = World()
    patient = asyncio.create_task(reads.read("k", world.fetch))
    with pytest.raises(TimeoutError):
        await reads.read("k", world.fetch, wait_seconds=0.01)
    world.release.set()
    assert await patient == 0
    await settle()
    assert reads._slots == {}


async def test_a_failed_fetch_fails_its_waiters_only() -> None:
    reads: FreshReads[int] = FreshReads()
    world = World()
    world.fail_next = True
    failing = asyncio.create_task(reads.read("k", world.fetch))
    await settle()
    later = asyncio.create_task(reads.read("k", world.fetch))
    await settle()
    world.release.set()
    with pytest.raises(RuntimeError):
        await failing
    assert await later == 0
    assert world.started == 2

"""GetConfig's read-through cache: reads of unchanged configs open no unit of work, and no
read ever returns a config older than a write this process finished."""

from __future__ import annotations

import pytest

from config_service.configs.cache import ConfigCache
from config_service.configs.edits import AddModule
from config_service.configs.model import ConfigFields
from config_service.configs.ports import ConfigUoW
from config_service.configs.service import ConfigService
from shared.broadcast import Broadcast
from shared.errors import NotFound
from tests.unit.config_fakes import FakeConfigDatabase

TENANT = "t1"


def doc(name: str) -> str:
    return f"bundle:\n  name: {name}\nproviders:\n  - module: provider-echo\n"


class Counting:
    """The fake's unit of work factory, counting the units opened."""

    def __init__(self, database: FakeConfigDatabase) -> None:
        self.database = database
        self.opened = 0

    def __call__(self, write: bool = False) -> ConfigUoW:
        self.opened += 1
        return self.database.unit_of_work(write)


@pytest.fixture
def units() -> Counting:
    return Counting(FakeConfigDatabase())


def service_over(units: Counting, cache: ConfigCache) -> ConfigService:
    return ConfigService(units, Broadcast(), cache=cache)


async def test_an_unchanged_config_is_read_once(units: Counting) -> None:
    cache = ConfigCache()
    service = service_over(units, cache)
    created = await service.create(TENANT, ConfigFields(name="a", yaml_content=doc("a")))
    first = await service.get(TENANT, created.config_id)
    opened = units.opened
    for _ in range(3):
        assert await service.get(TENANT, created.config_id) == first
    assert units.opened == opened
    assert cache.hits == 3
    # Another tenant's id is its own: not found, from the database.
    with pytest.raises(NotFound):
        await service.get("t2", created.config_id)
    assert units.opened == opened + 1


async def test_every_write_here_is_seen_by_the_next_read(units: Counting) -> None:
    service = service_over(units, ConfigCache())
    created = await service.create(TENANT, ConfigFields(name="a", yaml_content=doc("a")))
    await service.get(TENANT, created.config_id)
    edited = await service.edit(TENANT, created.config_id, created.etag, AddModule("tools", "t"))
    assert (await service.get(TENANT, created.config_id)).revision == edited.revision == 2
    await service.delete(TENANT, created.config_id, edited.etag)
    with pytest.raises(NotFound):
        await service.get(TENANT, created.config_id)
    # Revisions stay readable, and are kept once read.
    assert (await service.get(TENANT, created.config_id, 1)).etag == created.etag
    opened = units.opened
    assert (await service.get(TENANT, created.config_id, 1)).etag == created.etag
    assert units.opened == opened


async def test_a_failed_write_still_forgets_what_was_cached(units: Counting) -> None:
    # A commit whose outcome is unknown may have happened.
    cache = ConfigCache()
    service = service_over(units, cache)
    created = await service.create(TENANT, ConfigFields(name="a", yaml_content=doc("a")))
    await service.get(TENANT, created.config_id)
    generation = cache.generation
    with pytest.raises(Exception, match="etag"):
        await service.edit(TENANT, created.config_id, "stale", AddModule("tools", "t"))
    assert cache.generation == generation + 1
    assert cache.latest(TENANT, created.config_id) is None


async def test_a_read_that_raced_a_write_does_not_store_what_it_read(units: Counting) -> None:
    cache = ConfigCache()
    service = service_over(units, cache)
    created = await service.create(TENANT, ConfigFields(name="a", yaml_content=doc("a")))
    # A read took its generation, then another replica's write was heard before it stored.
    generation = cache.generation
    cache.invalidate()
    cache.keep_latest(TENANT, created, generation)
    assert cache.latest(TENANT, created.config_id) is None
    cache.keep_latest(TENANT, created, cache.generation)
    assert cache.latest(TENANT, created.config_id) == created


async def test_latest_states_are_not_served_while_other_writes_could_go_unheard(
    units: Counting,
) -> None:
    listening = [True]
    cache = ConfigCache(trusted=lambda: listening[0])
    service = service_over(units, cache)
    created = await service.create(TENANT, ConfigFields(name="a", yaml_content=doc("a")))
    await service.get(TENANT, created.config_id)
    listening[0] = False
    opened = units.opened
    await service.get(TENANT, created.config_id)
    await service.get(TENANT, created.config_id)
    assert units.opened == opened + 2
    assert cache.hits == 0


async def test_the_cache_is_bounded_least_recently_used_first(units: Counting) -> None:
    service = service_over(units, ConfigCache())
    a, b, c = [
        await service.create(TENANT, ConfigFields(name=name, yaml_content=doc(name)))
        for name in ("a", "b", "c")
    ]
    cache = ConfigCache(capacity=2)
    cache.keep_revision(TENANT, a)
    cache.keep_revision(TENANT, b)
    assert cache.revision(TENANT, a.config_id, 1) == a  # a is now the most recently used
    cache.keep_revision(TENANT, c)
    assert cache.revision(TENANT, b.config_id, 1) is None
    assert cache.revision(TENANT, a.config_id, 1) == a
    assert cache.revision(TENANT, c.config_id, 1) == c

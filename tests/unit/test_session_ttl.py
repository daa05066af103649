"""Session lifetimes over the in-memory unit of work: idle ttl, retention, the sweep.

Deadlines are put in the past by writing the committed state, so nothing here waits.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from session_service.sessions.model import IDLE_TIMEOUT, Message, Role, Session, Status, Transition
from session_service.sessions.service import SessionLifetimes, SessionService
from shared.clock import utcnow
from shared.errors import InvalidArgument, NotFound
from shared.quotas import NO_LIMITS, PolicyLookup, Quotas, TenantPolicy, unlimited
from tests.unit.session_fakes import FakeSessionDatabase, StubPreparer

TENANT = "t1"


def service(
    db: FakeSessionDatabase,
    lifetimes: SessionLifetimes | None = None,
    policies: PolicyLookup = unlimited,
) -> SessionService:
    return SessionService(
        db.unit_of_work, StubPreparer(), policies, lifetimes=lifetimes or SessionLifetimes()
    )


def ttl_capped(seconds: int) -> PolicyLookup:
    """TENANT may keep sessions idle for at most seconds; every other tenant, forever."""
    capped = TenantPolicy(Quotas(session_ttl_max_seconds=seconds))
    return lambda tenant_id: capped if tenant_id == TENANT else NO_LIMITS


def age(db: FakeSessionDatabase, session_id: str, **changes: object) -> Session:
    """Rewrites the committed session (a deadline in the past, say)."""
    key = (TENANT, session_id)
    db.state.sessions[key] = dataclasses.replace(db.state.sessions[key], **changes)  # type: ignore[arg-type]
    return db.state.sessions[key]


def past() -> object:
    return utcnow() - timedelta(seconds=1)


async def test_a_new_session_gets_the_default_ttl_and_its_deadline() -> None:
    db = FakeSessionDatabase()
    created = await service(db, SessionLifetimes(default_ttl=60, default_delete_after=5)).create(
        TENANT, "c1"
    )
    assert created.ttl_seconds == 60
    assert created.delete_after_seconds == 5
    assert created.idle_expire_time == created.create_time + timedelta(seconds=60)
    assert created.delete_time is None


async def test_no_ttl_means_no_deadline() -> None:
    db = FakeSessionDatabase()
    created = await service(db).create(TENANT, "c1", start=True)
    assert created.idle_expire_time is None
    assert await service(db).next_lifetime_deadline() is None


async def test_a_ttl_over_the_tenants_maximum_is_refused_on_the_ttl_field() -> None:
    db = FakeSessionDatabase()
    with pytest.raises(InvalidArgument) as caught:
        await service(db, policies=ttl_capped(100)).create(TENANT, "c1", ttl=101)
    assert [v.field for v in caught.value.violations] == ["ttl"]
    assert "100" in caught.value.violations[0].description
    assert caught.value.metadata["max_ttl_seconds"] == "100"
    assert db.state.sessions == {}


async def test_the_maximum_is_each_tenants_own() -> None:
    db = FakeSessionDatabase()
    sessions = service(db, policies=ttl_capped(100))
    assert (await sessions.create(TENANT, "c1", ttl=100)).ttl_seconds == 100
    # Another tenant has no ceiling.
    assert (await sessions.create("t2", "c1", ttl=10_000)).ttl_seconds == 10_000


async def test_a_default_ttl_over_the_tenants_maximum_is_lowered_to_it() -> None:
    db = FakeSessionDatabase()
    sessions = service(db, SessionLifetimes(default_ttl=600), ttl_capped(100))
    assert (await sessions.create(TENANT, "c1")).ttl_seconds == 100
    assert (await sessions.create("t2", "c1")).ttl_seconds == 600


async def test_a_negative_delete_after_is_refused() -> None:
    db = FakeSessionDatabase()
    with pytest.raises(InvalidArgument) as caught:
        await service(db).create(TENANT, "c1", delete_after=-1)
    assert [v.field for v in caught.value.violations] == ["delete_after"]


async def test_an_idle_session_is_completed_with_idle_timeout_once() -> None:
    db = FakeSessionDatabase()
    sessions = service(db)
    created = await sessions.create(TENANT, "c1", start=True, ttl=30)
    age(db, created.session_id, idle_expire_time=past())
    assert await sessions.expire_idle() == 1
    ended = await sessions.get(TENANT, created.session_id)
    assert ended.status is Status.COMPLETED
    assert ended.completion_reason == IDLE_TIMEOUT
    assert ended.version == created.version + 1
    assert ended.idle_expire_time is None
    # A second sweep finds nothing to do.
    assert await sessions.expire_idle() == 0
    assert (await sessions.get(TENANT, created.session_id)).version == ended.version


async def test_a_created_session_that_idles_out_is_completed_too() -> None:
    db = FakeSessionDatabase()
    sessions = service(db)
    created = await sessions.create(TENANT, "c1", ttl=30)
    age(db, created.session_id, idle_expire_time=past())
    assert await sessions.expire_idle() == 1
    assert (await sessions.get(TENANT, created.session_id)).status is Status.COMPLETED


async def test_activity_pushes_the_deadline() -> None:
    db = FakeSessionDatabase()
    sessions = service(db)
    created = await sessions.create(TENANT, "c1", start=True, ttl=30)
    age(db, created.session_id, idle_expire_time=past())
    message = await sessions.append_message(TENANT, created.session_id, Role.USER, "still here")
    current = await sessions.get(TENANT, created.session_id)
    assert current.idle_expire_time == message.create_time + timedelta(seconds=30)
    assert current.last_activity_time == message.create_time
    assert await sessions.expire_idle() == 0
    assert (await sessions.get(TENANT, created.session_id)).status is Status.ACTIVE


async def test_a_session_running_a_turn_is_not_idle() -> None:
    db = FakeSessionDatabase()
    sessions = service(db)
    created = await sessions.create(TENANT, "c1", start=True, ttl=30)
    age(db, created.session_id, idle_expire_time=past(), active_turn_id="turn-1")
    assert await sessions.expire_idle() == 0
    assert (await sessions.get(TENANT, created.session_id)).status is Status.ACTIVE


def test_every_write_is_activity() -> None:
    now = utcnow()
    session = Session("s1", "c1", 1, Status.ACTIVE, now, now, 1, ttl_seconds=10)
    later = now + timedelta(seconds=5)
    message = Message("m1", Role.USER, "hi", 1, later)
    for written in (
        session.with_message(message, later),
        session.turn_begun("turn-1", 1, 1, later),
        session.turn_written(2, 1, later),
    ):
        assert written.last_activity_time == later
        assert written.idle_expire_time == later + timedelta(seconds=10)


async def test_an_ended_session_is_deleted_after_delete_after() -> None:
    db = FakeSessionDatabase()
    sessions = service(db)
    created = await sessions.create(TENANT, "c1", start=True, delete_after=60)
    ended = await sessions.transition(TENANT, created.session_id, Transition.TERMINATE)
    assert ended.delete_time == ended.update_time + timedelta(seconds=60)
    assert await sessions.delete_expired() == 0  # not due yet
    age(db, created.session_id, delete_time=past())
    assert await sessions.delete_expired() == 1
    with pytest.raises(NotFound):
        await sessions.get(TENANT, created.session_id)
    assert await sessions.delete_expired() == 0


async def test_resuming_an_ended_session_cancels_its_deletion() -> None:
    db = FakeSessionDatabase()
    sessions = service(db)
    created = await sessions.create(TENANT, "c1", start=True, ttl=30, delete_after=60)
    await sessions.transition(TENANT, created.session_id, Transition.COMPLETE)
    resumed = await sessions.transition(TENANT, created.session_id, Transition.RESUME)
    assert resumed.delete_time is None
    assert resumed.idle_expire_time == resumed.update_time + timedelta(seconds=30)


async def test_the_next_deadline_is_the_earliest_of_idle_and_deletion() -> None:
    db = FakeSessionDatabase()
    sessions = service(db)
    idle = await sessions.create(TENANT, "c1", start=True, ttl=300)
    ending = await sessions.create(TENANT, "c1", start=True, delete_after=10)
    ended = await sessions.transition(TENANT, ending.session_id, Transition.COMPLETE)
    assert ended.delete_time is not None
    assert idle.idle_expire_time is not None
    assert await sessions.next_lifetime_deadline() == min(ended.delete_time, idle.idle_expire_time)

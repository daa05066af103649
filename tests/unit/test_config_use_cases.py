"""ConfigService's use cases against the in-memory unit of work: no database, no gRPC."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from typing import cast

import pytest

from config_service.configs.edits import AddModule
from config_service.configs.model import ChangeType, Config, ConfigChange, ConfigFields, Watcher
from config_service.configs.packages import IncomingFile
from config_service.configs.service import ConfigService, ConfigServiceOptions, Watch
from shared.broadcast import Broadcast
from shared.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from shared.quotas import Quotas, TenantPolicy
from tests.unit.config_fakes import FakeConfigDatabase

DOC = """\
bundle:
  name: dev
  version: 1.0.0
session:
  orchestrator: loop-basic
  context:
    module: context-simple
providers:
  - module: provider-echo
"""


def doc(name: str) -> str:
    return DOC.replace("name: dev", f"name: {name}")


@pytest.fixture
def database() -> FakeConfigDatabase:
    return FakeConfigDatabase()


@pytest.fixture
def service(database: FakeConfigDatabase) -> ConfigService:
    return ConfigService(database.unit_of_work, Broadcast())


async def create(service: ConfigService, name: str, tenant: str = "t1", **tags: str) -> Config:
    return await service.create(tenant, ConfigFields(name=name, yaml_content=doc(name), tags=tags))


async def changes(
    service: ConfigService, tenant: str | None, count: int
) -> list[tuple[int, ChangeType, str, int]]:
    found = await followed(service, Watch(tenant, 0), count)
    return [(c.sequence, c.type, c.config_id, c.revision) for c in found]


async def followed(service: ConfigService, watch: Watch, count: int) -> list[ConfigChange]:
    found: list[ConfigChange] = []
    # follow is an async generator: closed here, since the test stops reading it.
    stream = cast(AsyncGenerator[ConfigChange, None], service.follow(watch))
    try:
        async for change in stream:
            found.append(change)
            if len(found) == count:
                break
    finally:
        await stream.aclose()
    return found


# Create ------------------------------------------------------------------------------------


async def test_create_stores_revision_one(service: ConfigService) -> None:
    created = await create(service, "dev", team="core")

    assert created.revision == 1
    assert created.etag
    got = await service.get("t1", created.config_id)
    assert (got.name, got.yaml_content, dict(got.tags)) == ("dev", doc("dev"), {"team": "core"})
    assert got.summary.name == "dev"
    assert (await service.get("t1", created.config_id, revision=1)).etag == created.etag


async def test_create_refuses_a_live_name_and_a_taken_id(service: ConfigService) -> None:
    first = await create(service, "dev")

    with pytest.raises(AlreadyExists) as by_name:
        await create(service, "dev")
    assert by_name.value.reason == "CONFIG_NAME_TAKEN"
    with pytest.raises(AlreadyExists) as by_id:
        await service.create(
            "t1", ConfigFields(name="other", yaml_content=DOC), config_id=first.config_id
        )
    assert by_id.value.reason == "CONFIG_ID_TAKEN"
    # Names are unique per tenant only.
    assert (await create(service, "dev", tenant="t2")).name == "dev"


async def test_configs_of_another_tenant_are_not_found(service: ConfigService) -> None:
    created = await create(service, "dev")

    with pytest.raises(NotFound):
        await service.get("t2", created.config_id)


async def test_idempotent_create_replays_the_first_response_and_writes_nothing(
    service: ConfigService, database: FakeConfigDatabase
) -> None:
    fields = ConfigFields(name="dev", yaml_content=DOC)
    first = await service.create("t1", fields, request_id="r1")
    commits, state = database.commits, database.state

    # The same request again: equal values, not the same objects.
    again = await service.create(
        "t1", ConfigFields(name="dev", yaml_content=DOC, tags={}), request_id="r1"
    )

    assert (again.config_id, again.revision, again.etag) == (
        first.config_id,
        first.revision,
        first.etag,
    )
    assert again.warnings == first.warnings
    assert (database.commits, database.state) == (commits, state)
    with pytest.raises(InvalidArgument) as reused:
        await service.create("t1", ConfigFields(name="other", yaml_content=DOC), request_id="r1")
    assert reused.value.reason == "REQUEST_ID_REUSED"
    assert database.commits == commits


@pytest.mark.parametrize(
    ("config_id", "fields"),
    [
        ("", ConfigFields(name="dev", yaml_content=doc("other"))),
        ("", ConfigFields(name="dev", yaml_content=DOC, description="changed")),
        ("", ConfigFields(name="dev", yaml_content=DOC, tags={"team": "core"})),
        ("chosen-id", ConfigFields(name="dev", yaml_content=DOC)),
    ],
)
async def test_create_tells_a_reused_request_id_by_any_field_of_the_request(
    service: ConfigService, database: FakeConfigDatabase, config_id: str, fields: ConfigFields
) -> None:
    await service.create("t1", ConfigFields(name="dev", yaml_content=DOC), request_id="r1")
    commits = database.commits

    with pytest.raises(InvalidArgument) as reused:
        await service.create("t1", fields, config_id=config_id, request_id="r1")

    assert reused.value.reason == "REQUEST_ID_REUSED"
    assert database.commits == commits
    # Another tenant's request_ids are its own.
    assert (await service.create("t2", fields, config_id=config_id, request_id="r1")).revision == 1


async def test_create_under_a_quota_takes_the_tenant_lock(database: FakeConfigDatabase) -> None:
    def policy(_tenant: str) -> TenantPolicy:
        return TenantPolicy(quotas=Quotas(configs=1))

    service = ConfigService(
        database.unit_of_work, Broadcast(), ConfigServiceOptions(policies=policy)
    )
    await create(service, "one")

    with pytest.raises(ResourceExhausted):
        await create(service, "two")
    assert database.locks == [("t1", "configs"), ("t1", "configs")]


# Update, edit, rollback, delete ------------------------------------------------------------


async def test_update_with_a_stale_etag_is_aborted(service: ConfigService) -> None:
    created = await create(service, "dev")
    updated = await service.update(
        "t1", created.config_id, ConfigFields(description="first"), None, etag=created.etag
    )
    assert updated.revision == 2

    with pytest.raises(Aborted) as stale:
        await service.update(
            "t1", created.config_id, ConfigFields(description="second"), None, etag=created.etag
        )

    assert stale.value.reason == "ETAG_MISMATCH"
    assert (await service.get("t1", created.config_id)).description == "first"


async def test_update_to_a_taken_name_is_refused(service: ConfigService) -> None:
    await create(service, "dev")
    other = await create(service, "other")

    with pytest.raises(AlreadyExists):
        await service.update("t1", other.config_id, ConfigFields(name="dev"), ["name"])


async def test_edit_adds_a_tool_as_a_new_revision(service: ConfigService) -> None:
    created = await create(service, "dev")

    edited = await service.edit(
        "t1", created.config_id, created.etag, AddModule("tools", "tool-bash")
    )

    assert edited.revision == 2
    assert edited.etag != created.etag
    assert "tool-bash" in edited.yaml_content
    assert "tool-bash" in (await service.get("t1", created.config_id)).yaml_content
    # Revision 1 is immutable.
    assert (await service.get("t1", created.config_id, revision=1)).yaml_content == doc("dev")
    page = await service.list_revisions("t1", created.config_id, 0, "")
    assert [c.revision for c in page.items] == [2, 1]


async def test_delete_hides_the_config_but_keeps_its_revisions(service: ConfigService) -> None:
    created = await create(service, "dev")

    await service.delete("t1", created.config_id, created.etag)

    with pytest.raises(NotFound):
        await service.get("t1", created.config_id)
    with pytest.raises(NotFound):
        await service.delete("t1", created.config_id, "")
    assert (await service.get("t1", created.config_id, revision=1)).name == "dev"
    with pytest.raises(NotFound):
        await service.get("t1", created.config_id, revision=2)
    # The name is free again; the id stays taken.
    assert (await create(service, "dev")).config_id != created.config_id


async def test_rollback_makes_a_new_revision_with_the_old_content(service: ConfigService) -> None:
    created = await create(service, "dev")
    changed = await service.update(
        "t1", created.config_id, ConfigFields(yaml_content=doc("changed")), None
    )

    rolled = await service.rollback("t1", created.config_id, 1, changed.etag)

    assert rolled.revision == 3
    assert rolled.yaml_content == doc("dev")
    assert (await service.get("t1", created.config_id, revision=2)).yaml_content == doc("changed")
    with pytest.raises(NotFound):
        await service.rollback("t1", created.config_id, 9, "")


# List ------------------------------------------------------------------------------------


async def test_list_filters_and_pages(service: ConfigService) -> None:
    for name in ("a", "b", "c"):
        await create(service, name, team="core")
    await create(service, "d", team="web")
    await create(service, "e", tenant="t2", team="core")

    first = await service.list_configs("t1", 'tags.team = "core"', 2, "")
    assert len(first.items) == 2
    assert first.total_size == 3
    assert first.next_page_token
    second = await service.list_configs("t1", 'tags.team = "core"', 2, first.next_page_token)
    assert len(second.items) == 1
    assert second.next_page_token == ""
    names = sorted(c.name for c in (*first.items, *second.items))
    assert names == ["a", "b", "c"]
    assert [c.name for c in (await service.list_configs("t1", 'name = "d*"', 0, "")).items] == ["d"]
    with pytest.raises(InvalidArgument):
        await service.list_configs("t1", 'tags.team = "web"', 2, first.next_page_token)


# Change log ------------------------------------------------------------------------------


async def test_writes_append_changes_in_per_tenant_sequences(service: ConfigService) -> None:
    created = await create(service, "dev")
    other = await create(service, "dev", tenant="t2")
    updated = await service.update("t1", created.config_id, ConfigFields(description="x"), None)
    await service.delete("t1", created.config_id, updated.etag)

    assert await changes(service, "t1", 3) == [
        (1, ChangeType.CREATED, created.config_id, 1),
        (2, ChangeType.UPDATED, created.config_id, 2),
        (3, ChangeType.DELETED, created.config_id, 2),
    ]
    assert await changes(service, "t2", 1) == [(1, ChangeType.CREATED, other.config_id, 1)]
    everything = await changes(service, None, 4)
    assert [(sequence, kind) for sequence, kind, _, _ in everything] == [
        (1, ChangeType.CREATED),
        (2, ChangeType.CREATED),
        (3, ChangeType.UPDATED),
        (4, ChangeType.DELETED),
    ]
    assert await service.open_watch(Watcher("t1"), 0) == Watch("t1", 3)
    assert await service.open_watch(Watcher("t2"), 0) == Watch("t2", 1)


async def test_a_service_watches_every_tenant_and_any_other_caller_its_own(
    service: ConfigService,
) -> None:
    mine = await create(service, "dev")
    theirs = await create(service, "dev", tenant="t2")

    # A tenant's caller: its own tenant's changes, in its own sequence.
    own = await service.open_watch(Watcher("t1"), 0)
    assert own == Watch("t1", 1)
    assert await service.open_watch(Watcher("t2"), 1) == Watch("t2", 1)
    # A service identity, whatever tenant it was issued for: every tenant, in the global one.
    every = await service.open_watch(Watcher("t1", service=True), 0)
    assert every == Watch(None, 2)
    assert await service.open_watch(Watcher("t2", service=True), 1) == Watch(None, 1)

    await service.delete("t2", theirs.config_id, "")
    await service.delete("t1", mine.config_id, "")
    assert [c.config_id for c in await followed(service, own, 1)] == [mine.config_id]
    assert [c.config_id for c in await followed(service, every, 2)] == [
        theirs.config_id,
        mine.config_id,
    ]


async def test_a_write_that_changes_nothing_appends_nothing(service: ConfigService) -> None:
    created = await create(service, "dev")

    same = await service.update("t1", created.config_id, ConfigFields(name="dev"), ["name"])

    assert same.revision == 1
    assert (await service.open_watch(Watcher("t1"), 0)).cursor == 1


# ImportBundle ----------------------------------------------------------------------------

ROOT = """\
---
bundle:
  name: acme
  version: 1.0.0
includes:
  - bundle: acme:behaviors/quiet
session:
  orchestrator: loop-basic
  context:
    module: context-simple
providers:
  - module: provider-echo
---

# Acme
"""

QUIET = """\
bundle:
  name: behavior-quiet
  version: 1.0.0
"""


def package(**files: str) -> list[IncomingFile]:
    return [IncomingFile(path.replace("__", "/"), text.encode()) for path, text in files.items()]


async def test_import_then_reimport_counts_changes(
    service: ConfigService, database: FakeConfigDatabase
) -> None:
    first = await service.import_bundle(
        "t1",
        package(**{"bundle.md": ROOT, "behaviors__quiet.yaml": QUIET, "context__a.md": "A"}),
    )
    assert first.namespace == "acme"
    assert (first.created, first.updated, first.unchanged, first.deleted) == (3, 0, 0, 0)
    assert sorted(c.name for c in first.configs) == [
        "acme",
        "acme:behaviors/quiet",
        "acme:context/a.md",
    ]

    same = await service.import_bundle(
        "t1",
        package(**{"bundle.md": ROOT, "behaviors__quiet.yaml": QUIET, "context__a.md": "A"}),
    )
    assert (same.created, same.updated, same.unchanged, same.deleted) == (0, 0, 3, 0)

    revised = package(
        **{
            "bundle.md": ROOT,
            "behaviors__quiet.yaml": QUIET.replace("1.0.0", "1.1.0"),
            "context__b.md": "B",
        }
    )
    changed = await service.import_bundle("t1", revised, request_id="r1")
    assert (changed.created, changed.updated, changed.unchanged, changed.deleted) == (1, 1, 1, 1)
    quiet = next(c for c in changed.configs if c.path == "behaviors/quiet.yaml")
    assert quiet.revision == 2
    with pytest.raises(NotFound):
        await service.get(
            "t1", next(c for c in first.configs if c.path == "context/a.md").config_id
        )

    commits = database.commits
    replay = await service.import_bundle("t1", list(revised), request_id="r1")
    assert (replay.created, replay.updated, replay.unchanged, replay.deleted) == (1, 1, 1, 1)
    assert [c.config_id for c in replay.configs] == [c.config_id for c in changed.configs]
    assert database.commits == commits
    assert database.locks.count(("t1", "bundle:acme")) == 3

    # 3 creates, then 1 delete, 1 update and 1 create, in the tenant's own sequence.
    kinds = [kind for _, kind, _, _ in await changes(service, "t1", 6)]
    assert kinds == [ChangeType.CREATED] * 3 + [
        ChangeType.DELETED,
        ChangeType.UPDATED,
        ChangeType.CREATED,
    ]


@pytest.mark.parametrize(
    ("files", "source_uri"),
    [
        (package(**{"bundle.md": ROOT}), ""),
        (package(**{"bundle.md": ROOT, "context__a.md": "changed"}), ""),
        (package(**{"bundle.md": ROOT, "context__b.md": "A"}), ""),
        (package(**{"context__a.md": "A", "bundle.md": ROOT}), ""),
        (package(**{"bundle.md": ROOT, "context__a.md": "A"}), "git+https://example.com/acme"),
    ],
)
async def test_import_tells_a_reused_request_id_by_its_files_and_source(
    service: ConfigService,
    database: FakeConfigDatabase,
    files: list[IncomingFile],
    source_uri: str,
) -> None:
    sent = package(**{"bundle.md": ROOT, "context__a.md": "A"})
    first = await service.import_bundle("t1", sent, request_id="r1")
    commits = database.commits

    # The same files and source again, as new values: the first result, nothing written.
    again = await service.import_bundle(
        "t1", [IncomingFile(f.path, bytes(f.content)) for f in sent], request_id="r1"
    )
    assert again == first
    with pytest.raises(InvalidArgument) as reused:
        await service.import_bundle("t1", files, source_uri=source_uri, request_id="r1")

    assert reused.value.reason == "REQUEST_ID_REUSED"
    assert database.commits == commits
    # validate_only neither replays nor records.
    dry = await service.import_bundle(
        "t1", files, source_uri=source_uri, request_id="r1", validate_only=True
    )
    assert dry.namespace == "acme"
    assert database.commits == commits


async def test_import_refuses_a_name_held_outside_the_package(service: ConfigService) -> None:
    await service.create("t1", ConfigFields(name="acme:behaviors/quiet", yaml_content=QUIET))

    with pytest.raises(AlreadyExists) as taken:
        await service.import_bundle(
            "t1", package(**{"bundle.md": ROOT, "behaviors__quiet.yaml": QUIET})
        )
    assert taken.value.reason == "CONFIG_NAME_TAKEN"


# The fake itself ---------------------------------------------------------------------------


async def test_the_fake_keeps_names_unique_and_revisions_immutable(
    service: ConfigService, database: FakeConfigDatabase
) -> None:
    created = await create(service, "dev")

    async with database.unit_of_work(write=True) as uow:
        with pytest.raises(AlreadyExists):
            await uow.configs.insert("t1", dataclasses.replace(created, config_id="other"))
        with pytest.raises(AssertionError):
            await uow.configs.save_revision("t1", dataclasses.replace(created, description="x"))
    async with database.unit_of_work() as uow:
        with pytest.raises(AssertionError):
            await uow.configs.mark_deleted("t1", created.config_id, created.create_time)


async def test_the_fake_discards_uncommitted_writes(
    service: ConfigService, database: FakeConfigDatabase
) -> None:
    created = await create(service, "dev")

    async with database.unit_of_work(write=True) as uow:
        await uow.configs.mark_deleted("t1", created.config_id, created.create_time)

    assert (await service.get("t1", created.config_id)).delete_time is None

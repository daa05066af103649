"""ConfigService CRUD, revisions and errors through real stubs, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from tests.support.configs import DOC, create
from tests.support.rpc import detail, error_info, rpc_error

if TYPE_CHECKING:
    Stub = config_service_pb2_grpc.ConfigServiceAsyncStub


PURE = """\
bundle:
  name: pure
  version: "2"
session:
  orchestrator: loop-basic
  context:
    module: context-simple
"""


async def test_create_returns_revision_one_with_summary_and_exact_content(
    configs: Stub,
) -> None:
    created = await create(configs, "dev", tags={"team": "core"})
    assert created.revision == 1
    assert created.etag
    assert created.yaml_content == DOC
    assert dict(created.tags) == {"team": "core"}
    assert created.create_time == created.update_time
    summary = created.summary
    assert (summary.name, summary.version) == ("dev-config", "1.0.0")
    assert list(summary.providers) == ["provider-echo"]
    assert list(summary.tools) == ["tool-filesystem"]
    assert list(summary.includes) == ["foundation"]
    assert summary.has_instruction


async def test_get_returns_the_document_byte_for_byte(configs: Stub) -> None:
    created = await create(configs, "dev", config_id="dev-1")
    got = await configs.GetConfig(config_service_pb2.GetConfigRequest(config_id="dev-1"))
    # The write's findings come with its response only: `foundation` is no config here.
    [warning] = created.warnings
    assert (warning.field, warning.severity) == ("includes[0].bundle", config_pb2.SEVERITY_WARNING)
    assert "foundation" in warning.message
    assert not got.warnings
    created.ClearField("warnings")
    assert got == created
    assert got.yaml_content.encode() == DOC.encode()


async def test_generated_ids_are_unique(configs: Stub) -> None:
    first = await create(configs, "a")
    second = await create(configs, "b")
    assert first.config_id
    assert second.config_id != first.config_id


async def test_duplicate_id_and_duplicate_name_are_already_exists(configs: Stub) -> None:
    await create(configs, "dev", config_id="dev-1")
    same_id = await rpc_error(create(configs, "other", config_id="dev-1"))
    assert same_id.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(same_id).reason == "CONFIG_ID_TAKEN"
    same_name = await rpc_error(create(configs, "dev", config_id="dev-2"))
    assert same_name.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(same_name).reason == "CONFIG_NAME_TAKEN"
    assert detail(same_name, error_details_pb2.ResourceInfo).resource_name == "dev-1"


async def test_missing_config_is_not_found(configs: Stub) -> None:
    error = await rpc_error(
        configs.GetConfig(config_service_pb2.GetConfigRequest(config_id="nope"))
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error_info(error).reason == "CONFIG_NOT_FOUND"
    assert detail(error, error_details_pb2.ResourceInfo).resource_type == "Config"


async def test_create_requires_a_name_and_valid_ids(configs: Stub) -> None:
    no_name = await rpc_error(create(configs, ""))
    assert no_name.code() is grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in detail(no_name, error_details_pb2.BadRequest).field_violations]
    assert fields == ["config.name"]
    bad_id = await rpc_error(create(configs, "x", config_id="has space"))
    assert bad_id.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(bad_id).reason == "INVALID_CONFIG_ID"


async def test_names_are_ns_or_ns_colon_path(configs: Stub) -> None:
    made = await create(configs, "team:notes/guide", PURE)
    assert (made.name, made.kind, made.namespace, made.path) == (
        "team:notes/guide",
        config_pb2.CONFIG_KIND_BUNDLE,
        "",
        "",
    )
    for bad in ("team:../x", "team:a//b", "team:/x", "a:b:c", "/x", "team:", "te am", "x" * 129):
        error = await rpc_error(create(configs, bad, PURE))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, bad
        [violation] = detail(error, error_details_pb2.BadRequest).field_violations
        assert violation.field == "config.name"


async def test_an_invalid_document_is_refused_with_located_violations(configs: Stub) -> None:
    broken = "bundle:\n  version: 1.0.0\ntools:\n  - config: {}\n"
    error = await rpc_error(create(configs, "bad", broken))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_BUNDLE"
    violations = detail(error, error_details_pb2.BadRequest).field_violations
    by_field = {v.field: v.description for v in violations}
    assert "config.yaml_content.bundle.name" in by_field
    assert "config.yaml_content.tools[0].module" in by_field
    assert "(line 4," in by_field["config.yaml_content.tools[0].module"]
    listed = await configs.ListConfigs(config_service_pb2.ListConfigsRequest())
    assert listed.total_size == 0


async def test_validate_only_checks_everything_and_writes_nothing(configs: Stub) -> None:
    preview = await create(configs, "dev", config_id="dev-1", validate_only=True)
    assert preview.revision == 1
    assert preview.etag == ""
    missing = await rpc_error(
        configs.GetConfig(config_service_pb2.GetConfigRequest(config_id="dev-1"))
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    await create(configs, "dev", config_id="dev-1")
    clash = await rpc_error(create(configs, "dev", config_id="dev-2", validate_only=True))
    assert clash.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_create_with_a_request_id_is_idempotent(configs: Stub) -> None:
    first = await create(configs, "dev", request_id="req-1")
    again = await create(configs, "dev", request_id="req-1")
    assert again == first
    listed = await configs.ListConfigs(config_service_pb2.ListConfigsRequest())
    assert listed.total_size == 1
    # The replay is the first response even after the config changed.
    await configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(config_id=first.config_id, description="changed")
        )
    )
    assert await create(configs, "dev", request_id="req-1") == first
    reused = await rpc_error(create(configs, "another", request_id="req-1"))
    assert reused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(reused).reason == "REQUEST_ID_REUSED"


async def test_concurrent_creates_with_one_request_id_make_one_config(configs: Stub) -> None:
    results = await asyncio.gather(*(create(configs, "dev", request_id="same") for _ in range(8)))
    assert {c.config_id for c in results} == {results[0].config_id}
    assert all(c == results[0] for c in results)
    assert (await configs.ListConfigs(config_service_pb2.ListConfigsRequest())).total_size == 1


async def test_update_with_a_mask_changes_only_those_fields(configs: Stub) -> None:
    created = await create(configs, "dev", tags={"team": "core"})
    updated = await configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(
                config_id=created.config_id,
                description="new description",
                name="ignored-because-not-in-mask",
                etag=created.etag,
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    )
    assert updated.revision == 2
    assert updated.etag != created.etag
    assert updated.description == "new description"
    assert updated.name == "dev"
    assert dict(updated.tags) == {"team": "core"}
    assert updated.yaml_content == DOC
    assert updated.create_time == created.create_time
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()


async def test_update_without_a_mask_applies_populated_fields(configs: Stub) -> None:
    created = await create(configs, "dev", tags={"team": "core"})
    updated = await configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(config_id=created.config_id, yaml_content=PURE)
        )
    )
    assert updated.yaml_content == PURE
    assert updated.summary.name == "pure"
    assert updated.summary.orchestrator == "loop-basic"
    assert updated.summary.context == "context-simple"
    assert not updated.summary.has_instruction
    assert dict(updated.tags) == {"team": "core"}


async def test_update_mask_errors(configs: Stub) -> None:
    created = await create(configs, "dev")
    for paths, reason in (
        (["nonsense"], "INVALID_UPDATE_MASK"),
        (["revision"], "INVALID_UPDATE_MASK"),
    ):
        error = await rpc_error(
            configs.UpdateConfig(
                config_service_pb2.UpdateConfigRequest(
                    config=config_pb2.Config(config_id=created.config_id),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            )
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(error).reason == reason
        [violation] = detail(error, error_details_pb2.BadRequest).field_violations
        assert violation.field == "update_mask"
    missing = await rpc_error(
        configs.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(config_id="nope", description="x")
            )
        )
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND


async def test_a_stale_etag_is_aborted_with_precondition_failure(configs: Stub) -> None:
    created = await create(configs, "dev")
    await configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(config_id=created.config_id, description="one")
        )
    )
    error = await rpc_error(
        configs.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(
                    config_id=created.config_id, description="two", etag=created.etag
                )
            )
        )
    )
    assert error.code() is grpc.StatusCode.ABORTED
    info = error_info(error)
    assert info.reason == "ETAG_MISMATCH"
    assert info.metadata["current_revision"] == "2"
    failure = detail(error, error_details_pb2.PreconditionFailure)
    assert failure.violations[0].type == "ETAG_MISMATCH"
    stale_delete = await rpc_error(
        configs.DeleteConfig(
            config_service_pb2.DeleteConfigRequest(config_id=created.config_id, etag=created.etag)
        )
    )
    assert stale_delete.code() is grpc.StatusCode.ABORTED


async def test_twenty_concurrent_updates_with_one_etag_have_one_winner(configs: Stub) -> None:
    created = await create(configs, "dev")

    async def update(n: int) -> config_pb2.Config:
        return await configs.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(
                    config_id=created.config_id, description=f"writer {n}", etag=created.etag
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            )
        )

    results = await asyncio.gather(*(update(n) for n in range(20)), return_exceptions=True)
    winners = [r for r in results if isinstance(r, config_pb2.Config)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert len(losers) == 19
    assert all(e.code() is grpc.StatusCode.ABORTED for e in losers)
    current = await configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id=created.config_id)
    )
    assert current.revision == 2
    assert current.description == winners[0].description


async def test_revisions_are_immutable_and_listed_newest_first(configs: Stub) -> None:
    created = await create(configs, "dev")
    for n in range(3):
        await configs.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(config_id=created.config_id, description=f"v{n + 2}")
            )
        )
    first = await configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id=created.config_id, revision=1)
    )
    created.ClearField("warnings")
    assert first == created
    pages: list[config_pb2.Config] = []
    token = ""
    while True:
        page = await configs.ListConfigRevisions(
            config_service_pb2.ListConfigRevisionsRequest(
                config_id=created.config_id, page_size=3, page_token=token
            )
        )
        assert page.total_size == 4
        pages.extend(page.revisions)
        token = page.next_page_token
        if not token:
            break
    assert [r.revision for r in pages] == [4, 3, 2, 1]
    assert [r.description for r in pages] == ["v4", "v3", "v2", ""]
    assert all(r.yaml_content == "" for r in pages)  # BASIC by default
    missing = await rpc_error(
        configs.GetConfig(
            config_service_pb2.GetConfigRequest(config_id=created.config_id, revision=9)
        )
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND


async def test_rollback_makes_a_new_revision_equal_to_the_old_one(configs: Stub) -> None:
    created = await create(configs, "dev", tags={"v": "1"})
    changed = await configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(
                config_id=created.config_id, yaml_content=PURE, tags={"v": "2"}
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["yaml_content", "tags"]),
        )
    )
    rolled = await configs.RollbackConfig(
        config_service_pb2.RollbackConfigRequest(
            config_id=created.config_id, revision=1, etag=changed.etag
        )
    )
    assert rolled.revision == 3
    assert rolled.yaml_content == created.yaml_content
    assert dict(rolled.tags) == {"v": "1"}
    assert rolled.summary == created.summary
    assert rolled.etag not in (created.etag, changed.etag)
    stale = await rpc_error(
        configs.RollbackConfig(
            config_service_pb2.RollbackConfigRequest(
                config_id=created.config_id, revision=1, etag=changed.etag
            )
        )
    )
    assert stale.code() is grpc.StatusCode.ABORTED
    unknown = await rpc_error(
        configs.RollbackConfig(
            config_service_pb2.RollbackConfigRequest(config_id=created.config_id, revision=7)
        )
    )
    assert unknown.code() is grpc.StatusCode.NOT_FOUND


async def test_delete_hides_the_config_but_keeps_its_revisions(configs: Stub) -> None:
    created = await create(configs, "dev", config_id="dev-1")
    await configs.DeleteConfig(
        config_service_pb2.DeleteConfigRequest(config_id="dev-1", etag=created.etag)
    )
    gone = await rpc_error(
        configs.GetConfig(config_service_pb2.GetConfigRequest(config_id="dev-1"))
    )
    assert gone.code() is grpc.StatusCode.NOT_FOUND
    pinned = await configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id="dev-1", revision=1)
    )
    assert pinned.yaml_content == DOC
    revisions = await configs.ListConfigRevisions(
        config_service_pb2.ListConfigRevisionsRequest(config_id="dev-1")
    )
    assert [r.revision for r in revisions.revisions] == [1]
    assert (await configs.ListConfigs(config_service_pb2.ListConfigsRequest())).total_size == 0
    again = await rpc_error(
        configs.DeleteConfig(config_service_pb2.DeleteConfigRequest(config_id="dev-1"))
    )
    assert again.code() is grpc.StatusCode.NOT_FOUND
    # The name is free again; the id stays taken, since pinned sessions still name it.
    await create(configs, "dev", config_id="dev-2")
    taken = await rpc_error(create(configs, "other", config_id="dev-1"))
    assert taken.code() is grpc.StatusCode.ALREADY_EXISTS
    updating = await rpc_error(
        configs.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(config_id="dev-1", description="x")
            )
        )
    )
    assert updating.code() is grpc.StatusCode.NOT_FOUND


async def test_validate_config_reports_violations_and_summary(configs: Stub) -> None:
    result = await configs.ValidateConfig(
        config_service_pb2.ValidateConfigRequest(yaml_content=DOC)
    )
    assert result.valid
    assert result.summary.name == "dev-config"
    warned = await configs.ValidateConfig(
        config_service_pb2.ValidateConfigRequest(
            yaml_content="bundle:\n  name: x\nproviders:\n  - module: p\n    config:\n"
            "      api_key: sk-abcdefghijklmnopqrstuvwxyz123456\nsurprise: 1\n"
        )
    )
    # A literal secret is an error for a tenant that has not opted in (the default).
    assert not warned.valid
    severities = {(v.field, v.severity) for v in warned.violations}
    assert ("providers[0].config.api_key", config_pb2.SEVERITY_ERROR) in severities
    assert ("surprise", config_pb2.SEVERITY_WARNING) in severities
    assert all("sk-abc" not in v.message for v in warned.violations)
    invalid = await configs.ValidateConfig(
        config_service_pb2.ValidateConfigRequest(yaml_content="bundle: [unclosed\n")
    )
    assert not invalid.valid
    [error] = [v for v in invalid.violations if v.severity == config_pb2.SEVERITY_ERROR]
    assert error.line >= 1
    assert (await configs.ListConfigs(config_service_pb2.ListConfigsRequest())).total_size == 0

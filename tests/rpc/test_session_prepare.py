"""Preparation through both services in process: includes, merge rules, pinning, the cache."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
import sqlalchemy
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from ruamel.yaml import YAML

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from shared.db.engine import sync_url
from shared.tenancy import DEFAULT_TENANT
from tests.support.configs import create_config
from tests.support.pair import Stack
from tests.support.rpc import detail, error_info, rpc_error

TEAM_BASE = """\
---
bundle:
  name: team-base
  version: 2.0.0
includes:
  - tandem:dev
session:
  orchestrator: loop-basic
  max_iterations: 4
  retry:
    attempts: 2
providers:
  - module: provider-echo
    config:
      delay_ms: 1
      reply: from team-base
tools:
  - module: tool-filesystem
    config:
      allowed_paths: ["team"]
spawn:
  exclude_tools: [tool-task]
  max_depth: 2
---
Team base instruction.
"""

APP = """\
---
bundle:
  name: app
includes:
  - bundle: team-base
session:
  retry:
    backoff: 0.5
providers:
  - module: provider-echo
    config:
      reply: from app
      api_key: ${TANDEM_TEST_SECRET}
      model: ${TANDEM_UNSET_MODEL:echo-large}
hooks:
  - module: hooks-logging
    id: audit
    config:
      log_level: DEBUG
spawn:
  max_depth: 3
---

# App assistant

The app's own instruction.
"""


async def prepare(
    stack: Stack, config_id: str, revision: int = 0
) -> session_service_pb2.PrepareConfigResponse:
    return await stack.sessions.PrepareConfig(
        session_service_pb2.PrepareConfigRequest(config_id=config_id, revision=revision)
    )


def parse(yaml_text: str) -> dict[str, Any]:
    loaded = YAML(typ="safe", pure=True).load(yaml_text)
    assert isinstance(loaded, dict)
    return loaded


async def test_composition_follows_the_merge_rules_field_by_field(stack: Stack) -> None:
    await create_config(stack, "team-base", TEAM_BASE)
    app = await create_config(stack, "app", APP)
    prepared = await prepare(stack, "app")
    assert prepared.revision == app.revision
    assert list(prepared.composed_from) == ["bundle:tandem:dev", "config:team-base", "config:app"]
    doc = parse(prepared.composed_yaml)
    # The including bundle's identity wins.
    assert doc["bundle"] == {"name": "app"}
    assert "includes" not in doc
    # session: deep-merged across all three.
    assert doc["session"] == {
        "orchestrator": "loop-basic",  # team-base over tandem:dev's loop-streaming
        "context": "context-simple",  # from tandem:dev
        "max_iterations": 4,  # team-base over tandem:dev's 10
        "retry": {"attempts": 2, "backoff": 0.5},  # nested merge
    }
    # spawn: deep-merged.
    assert doc["spawn"] == {"exclude_tools": ["tool-task"], "max_depth": 3}
    # providers merged by module, config deep-merged, the app last.
    [provider] = doc["providers"]
    assert provider["module"] == "provider-echo"
    assert provider["config"]["delay_ms"] == 1
    assert provider["config"]["reply"] == "from app"
    # Secrets stay masked: the reference is shown, never the value.
    assert provider["config"]["api_key"] == "${TANDEM_TEST_SECRET}"
    assert provider["config"]["model"] == "${TANDEM_UNSET_MODEL:echo-large}"
    # tools: merged by module; tandem:dev's entry (no config: the workspace) takes team-base's.
    [tool] = doc["tools"]
    assert tool["config"] == {"allowed_paths": ["team"]}
    # hooks: merged by id, else module; the app's `audit` entry is a separate one.
    hooks = doc["hooks"]
    assert [(h.get("id"), h["module"]) for h in hooks] == [
        (None, "hooks-logging"),
        ("audit", "hooks-logging"),
    ]
    # The instruction is replaced whole.
    assert prepared.instruction == "# App assistant\n\nThe app's own instruction."
    modules = {(m.kind, m.module, m.field) for m in prepared.modules}
    assert ("orchestrator", "loop-basic", "session.orchestrator") in modules
    assert ("context", "context-simple", "session.context") in modules
    assert ("provider", "provider-echo", "providers[0]") in modules
    assert ("hook", "hooks-logging", "hooks[1]") in modules
    implementation = {m.module: m.implementation for m in prepared.modules}
    assert implementation["provider-echo"] == "session_service.modules.echo:EchoProvider"
    assert "s3cr3t" not in str(prepared)


async def test_an_included_instruction_is_inherited_when_the_includer_has_none(
    stack: Stack,
) -> None:
    await create_config(stack, "team-base", TEAM_BASE)
    await create_config(stack, "plain", "bundle:\n  name: plain\nincludes: [team-base]\n")
    prepared = await prepare(stack, "plain")
    assert prepared.instruction == "Team base instruction."


async def test_create_session_from_a_config_with_includes(stack: Stack) -> None:
    await create_config(stack, "team-base", TEAM_BASE)
    app = await create_config(stack, "app", APP)
    session = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="app", tags={"user": "u1"})
    )
    assert session.config_id == "app"
    assert session.config_revision == app.revision
    assert session.status == session_pb2.SESSION_STATUS_CREATED
    assert dict(session.tags) == {"user": "u1"}
    assert "s3cr3t" not in str(session)


async def test_a_pinned_session_keeps_its_revision_and_new_ones_get_the_latest(
    stack: Stack,
) -> None:
    first = await create_config(stack, "app", "bundle:\n  name: v1\n")
    pinned = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="app")
    )
    assert pinned.config_revision == 1
    updated = await stack.configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(config_id="app", yaml_content="bundle:\n  name: v2\n"),
            update_mask=field_mask_pb2.FieldMask(paths=["yaml_content"]),
        )
    )
    assert updated.revision == 2

    async def latest_revision() -> int:
        created = await stack.sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id="app")
        )
        return created.config_revision

    # The change stream evicts the cached "latest" within moments, with no restart.
    for _ in range(50):
        if await latest_revision() == 2:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("new sessions never took revision 2")
    again = await stack.sessions.GetSession(
        session_service_pb2.GetSessionRequest(session_id=pinned.session_id)
    )
    assert again.config_revision == 1
    old = await prepare(stack, "app", revision=1)
    assert parse(old.composed_yaml)["bundle"] == {"name": "v1"}
    explicit = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="app", config_revision=1)
    )
    assert explicit.config_revision == first.revision


async def test_changing_an_included_config_re_prepares_the_includer(stack: Stack) -> None:
    await create_config(stack, "team-base", TEAM_BASE)
    await create_config(stack, "app", APP)
    before = await prepare(stack, "app")
    assert parse(before.composed_yaml)["session"]["max_iterations"] == 4
    await stack.configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(
                config_id="team-base",
                yaml_content=TEAM_BASE.replace("max_iterations: 4", "max_iterations: 7"),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["yaml_content"]),
        )
    )
    for _ in range(50):
        after = await prepare(stack, "app")
        if parse(after.composed_yaml)["session"]["max_iterations"] == 7:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the includer was never re-prepared")
    assert after.revision == before.revision


async def test_cycles_and_missing_includes_are_reported_with_their_location(
    stack: Stack,
) -> None:
    await create_config(stack, "a", "bundle:\n  name: a\nincludes: [b]\n")
    await create_config(stack, "b", "bundle:\n  name: b\nincludes: [c, nowhere]\n")
    await create_config(stack, "c", "bundle:\n  name: c\nincludes: [a]\n")
    error = await rpc_error(
        stack.sessions.CreateSession(session_service_pb2.CreateSessionRequest(config_id="a"))
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "PREPARATION_FAILED"
    violations = detail(error, error_details_pb2.PreconditionFailure).violations
    found = {(v.type, v.subject) for v in violations}
    assert ("INCLUDE_CYCLE", "config:c: includes[0]") in found
    assert ("INCLUDE_NOT_FOUND", "config:b: includes[1]") in found
    # The dry run answers OK and lists the same problems in its body.
    report = await prepare(stack, "a")
    assert not report.valid
    assert {(v.message.split(":")[0], v.field) for v in report.violations} == found
    assert all(v.severity == config_pb2.SEVERITY_ERROR for v in report.violations)
    cycle = next(v for v in violations if v.type == "INCLUDE_CYCLE")
    assert "a -> b -> c -> a" in cycle.description
    refused = await rpc_error(
        stack.sessions.CreateSession(session_service_pb2.CreateSessionRequest(config_id="a"))
    )
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_an_unknown_module_is_failed_precondition_naming_it(stack: Stack) -> None:
    await create_config(
        stack,
        "app",
        "bundle:\n  name: app\ntools:\n  - module: tool-filesystem\n"
        "  - module: tool-mcp\n    source: git+https://example.invalid/tool-mcp\n",
    )
    error = await rpc_error(
        stack.sessions.CreateSession(session_service_pb2.CreateSessionRequest(config_id="app"))
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "MODULE_NOT_INSTALLED"
    [violation] = detail(error, error_details_pb2.PreconditionFailure).violations
    assert violation.subject == "config:app: tools[1]"
    assert "tool-mcp" in violation.description
    assert "git+https://example.invalid/tool-mcp" in violation.description
    # What is installed instead, nearest first (a long list is cut in the middle).
    assert "is not installed; did you mean tool-search" in violation.description


async def test_a_variable_the_operator_does_not_allow_is_reported(stack: Stack) -> None:
    await create_config(
        stack,
        "app",
        "bundle:\n  name: app\nproviders:\n  - module: provider-echo\n"
        "    config:\n      api_key: ${TANDEM_SURELY_UNSET_VARIABLE}\n",
    )
    error = await rpc_error(
        stack.sessions.CreateSession(session_service_pb2.CreateSessionRequest(config_id="app"))
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    [violation] = detail(error, error_details_pb2.PreconditionFailure).violations
    assert violation.type == "ENV_NOT_AVAILABLE"
    assert violation.subject == "providers[0].config.api_key"
    # The rule is named; whether the variable exists is not said, nor its name repeated.
    assert "TANDEM_BUNDLE_ENV_ALLOW" in violation.description
    assert "TANDEM_SURELY_UNSET_VARIABLE" not in violation.description


async def test_missing_configs_are_not_found(stack: Stack) -> None:
    error = await rpc_error(
        stack.sessions.CreateSession(session_service_pb2.CreateSessionRequest(config_id="nope"))
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
    pinned = await rpc_error(prepare(stack, "nope", revision=3))
    assert pinned.code() is grpc.StatusCode.NOT_FOUND


async def test_the_cache_is_shared_and_counts_hits_and_misses(stack: Stack) -> None:
    await create_config(stack, "app", "bundle:\n  name: app\n")
    # Let the cache's watch see the creation first: a change that lands during a preparation
    # (rightly) keeps that preparation out of the cache.
    for _ in range(100):
        if stack.session_app.watcher.last_sequence >= 1:
            break
        await asyncio.sleep(0.05)
    before = stack.session_app.cache.stats()
    first = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="app")
    )
    cold = stack.session_app.cache.stats()
    assert cold.misses > before.misses
    others = await asyncio.gather(
        *(
            stack.sessions.CreateSession(session_service_pb2.CreateSessionRequest(config_id="app"))
            for _ in range(4)
        )
    )
    after = stack.session_app.cache.stats()
    # One prepared bundle serves all five sessions: the four later ones are hits.
    assert after.size == before.size + 1
    assert after.hits - cold.hits == 4
    assert after.misses == cold.misses
    assert {s.config_revision for s in [first, *others]} == {1}
    await stack.configs.DeleteConfig(config_service_pb2.DeleteConfigRequest(config_id="app"))
    for _ in range(50):
        if stack.session_app.cache.stats().evictions > after.evictions:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("deleting the config never evicted its prepared bundle")
    gone = await rpc_error(
        stack.sessions.CreateSession(session_service_pb2.CreateSessionRequest(config_id="app"))
    )
    assert gone.code() is grpc.StatusCode.NOT_FOUND


def stored_text(database_url: str) -> str:
    """Every row of every table in the database, as one text to search."""
    engine = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            rows = [
                repr(row)
                for table in sqlalchemy.inspect(connection).get_table_names()
                for row in connection.execute(sqlalchemy.text(f'SELECT * FROM "{table}"'))
            ]
    finally:
        engine.dispose()
    assert rows, "expected stored rows to search"
    return "\n".join(rows)


async def test_references_are_expanded_and_the_secret_never_leaves_the_process(
    stack: Stack, database_url: str
) -> None:
    await create_config(stack, "team-base", TEAM_BASE)
    await create_config(stack, "app", APP)
    session = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="app", start=True)
    )
    # Expanded in the prepared bundle that turns will run from: the value and the default.
    bundle = stack.session_app.cache.get((DEFAULT_TENANT, "app", session.config_revision))
    assert bundle is not None, "the session's prepared bundle is not cached"
    [provider] = bundle.document["providers"]
    assert provider["config"]["api_key"] == "s3cr3t-value-never-shown"
    assert provider["config"]["model"] == "echo-large"
    await stack.sessions.AppendMessage(
        session_service_pb2.AppendMessageRequest(
            session_id=session.session_id,
            message=session_pb2.Message(role=session_pb2.ROLE_USER, content="hello"),
        )
    )
    responses = [
        session,
        await stack.sessions.GetSession(
            session_service_pb2.GetSessionRequest(session_id=session.session_id)
        ),
        await stack.sessions.ListSessions(session_service_pb2.ListSessionsRequest()),
        await stack.sessions.ListMessages(
            session_service_pb2.ListMessagesRequest(session_id=session.session_id)
        ),
        await prepare(stack, "app"),
    ]
    for response in responses:
        assert "s3cr3t" not in str(response)
    # Both services share this test database; neither stored the expanded value.
    assert "s3cr3t" not in stored_text(database_url)

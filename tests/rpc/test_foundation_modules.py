"""A package shaped like Amplifier's foundation bundle prepares on the built-in modules.

tests/fixtures/packages/foundation-like has the real package's layout: a root bundle.md
including its behaviors (sessions and logging, todo-reminder, streaming-ui, agents, tasks),
which name the modules and config keys the real ones do, and two agents. It is imported with
ImportBundle and its root prepared through real stubs on both databases: every module it
names is installed, and the only thing an operator can still refuse is tool-bash.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.pair import Stack, running_pair
from tests.support.rpc import detail, rpc_error

PACKAGE = Path(__file__).resolve().parents[1] / "fixtures" / "packages" / "foundation-like"
SOURCE = "git+https://example.invalid/tandem/foundation-like@main"

# Every module the package names besides the file tools, loop, context and provider that
# tandem:dev already covers. hooks-approval, which the real package also names, is not
# built yet, so the fixture leaves it out.
FOUNDATION_MODULES = {
    "tool-skills",
    "tool-todo",
    "tool-delegate",
    "hooks-todo-reminder",
    "hooks-todo-display",
    "hooks-session-naming",
    "tool-bash",
    "tool-web",
    "tool-search",
    "tool-apply-patch",
    "tool-task",
}
DISPLAY_ONLY = ("hooks-todo-display", "hooks-streaming-ui")


@pytest.fixture
async def bash_on(database_url: str) -> AsyncIterator[Stack]:
    """Both services with the installed modules, the operator having enabled tool-bash."""
    async with running_pair(
        database_url,
        config={"watch_poll_seconds": 0.5},
        session={"tools_bash_enabled": True},
    ) as running:
        yield running


async def import_foundation(stack: Stack) -> str:
    """Imports the package; the id of its root bundle."""
    files = [
        config_service_pb2.BundleFile(
            path=path.relative_to(PACKAGE).as_posix(), content=path.read_bytes()
        )
        for path in sorted(PACKAGE.rglob("*"))
        if path.is_file()
    ]
    reply = await stack.configs.ImportBundle(
        config_service_pb2.ImportBundleRequest(files=files, source_uri=SOURCE)
    )
    assert reply.namespace == "foundation"
    # Every reference inside the package resolved within it.
    assert list(reply.warnings) == []
    [root] = [c for c in reply.configs if c.path == "bundle.md"]
    assert root.kind == config_pb2.CONFIG_KIND_BUNDLE
    return str(root.config_id)


async def prepare(stack: Stack, config_id: str) -> session_service_pb2.PrepareConfigResponse:
    return await stack.sessions.PrepareConfig(
        session_service_pb2.PrepareConfigRequest(config_id=config_id)
    )


async def test_a_foundation_shaped_package_prepares_with_every_module_installed(
    bash_on: Stack,
) -> None:
    root = await import_foundation(bash_on)
    prepared = await prepare(bash_on, root)

    assert prepared.valid, [(v.field, v.message) for v in prepared.violations]
    installed = {m.module: m.implementation for m in prepared.modules}
    assert not FOUNDATION_MODULES - installed.keys(), "not among the prepared modules"
    assert all(
        installed[name].startswith("session_service.modules.") for name in FOUNDATION_MODULES
    )
    assert prepared.default_provider == "provider-echo"
    findings = [*prepared.warnings, *prepared.violations]
    assert not [f for f in findings if "MODULE_NOT_INSTALLED" in f.message]

    # The behaviors composed in include order, the root last.
    assert list(prepared.composed_from) == [
        "config:foundation:behaviors/logging",
        "config:foundation:behaviors/sessions",
        "config:foundation:behaviors/todo-reminder",
        "config:foundation:behaviors/streaming-ui",
        "config:foundation:behaviors/agents",
        "config:foundation:behaviors/tasks",
        "config:foundation",
    ]
    assert sorted((a.name, a.source) for a in prepared.agents) == [
        ("explorer", "foundation:agents/explorer"),
        ("web-research", "foundation:agents/web-research"),
    ]

    # The terminal-only hooks are installed as no-ops, and preparation says so where they
    # are used; keys only Amplifier's modules read are warned about, not refused.
    warnings = {w.field: w.message for w in prepared.warnings}
    fields = {m.module: m.field for m in prepared.modules}
    for name in DISPLAY_ONLY:
        assert "does nothing here" in warnings[fields[name]]
    task = fields["tool-task"]
    assert "tool-task does not read 'exclude_tools'" in warnings[f"{task}.config.exclude_tools"]

    # A session is created on it as on any config.
    session = await bash_on.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id=root)
    )
    assert session.session_id


async def test_the_same_package_is_refused_where_the_operator_left_bash_off(
    stack: Stack,
) -> None:
    root = await import_foundation(stack)
    prepared = await prepare(stack, root)

    assert not prepared.valid
    # Composition puts the included behaviors' four tools first, so the root's second tool,
    # tool-bash, is tools[5] of the composed document.
    bash = "tools[5].config.module"
    # Reported once: the agents inherit bash from the bundle, which is refused for it.
    assert {(v.field, v.message.split(":")[0]) for v in prepared.violations} == {
        (bash, "TOOL_NOT_ENABLED"),
    }
    assert all("TANDEM_TOOLS_BASH_ENABLED" in v.message for v in prepared.violations)
    assert all(v.severity == config_pb2.SEVERITY_ERROR for v in prepared.violations)

    error = await rpc_error(
        stack.sessions.CreateSession(session_service_pb2.CreateSessionRequest(config_id=root))
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    violations = detail(error, error_details_pb2.PreconditionFailure).violations
    assert (violations[0].type, violations[0].subject) == ("TOOL_NOT_ENABLED", bash)

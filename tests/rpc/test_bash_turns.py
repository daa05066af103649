"""tool-bash through real stubs on both databases: refused unless the operator enables it,
and a command the model asks for runs in the session's workspace when it is."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.support.modules import installed_with
from tests.support.pair import Stack, running_pair
from tests.support.rpc import detail, rpc_error
from tests.support.sandbox import sandbox_unavailable
from tests.support.turns import active_session, bundle, collect, kinds, send

BASH = {"tool": {"tool-bash": "session_service.modules.bash:BashTool"}}
TOOLS = [{"module": "tool-bash", "config": {"timeout": 20}}]


@pytest.fixture
async def bash_off(database_url: str) -> AsyncIterator[Stack]:
    """A pair whose SessionService has tool-bash installed but not enabled (the default)."""
    async with running_pair(database_url, modules=installed_with(BASH)) as running:
        yield running


@pytest.fixture
async def bash_on(database_url: str) -> AsyncIterator[Stack]:
    """A pair whose operator enabled tool-bash (TANDEM_TOOLS_BASH_ENABLED=true)."""
    async with running_pair(
        database_url, modules=installed_with(BASH), session={"tools_bash_enabled": True}
    ) as running:
        yield running


async def test_a_bundle_with_bash_is_refused_while_the_operator_has_it_off(
    bash_off: Stack,
) -> None:
    document = bundle({"script": [{"reply": "never"}]}, tools=TOOLS)
    error = await rpc_error(active_session(bash_off, document, "bash-off"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    [violation] = detail(error, error_details_pb2.PreconditionFailure).violations
    assert violation.type == "TOOL_NOT_ENABLED"
    assert violation.subject == "tools[0].config.module"
    assert "TANDEM_TOOLS_BASH_ENABLED" in violation.description


async def test_the_model_runs_a_command_in_the_session_workspace(bash_on: Stack) -> None:
    command = "echo hello > f.txt && cat f.txt"
    script = [
        {"tool_calls": [{"name": "bash", "arguments": {"command": command}}]},
        {"reply": "done"},
    ]
    session_id = await active_session(bash_on, bundle({"script": script}, tools=TOOLS))
    events = await collect(send(bash_on.sessions, session_id, "make a file"), within=60)
    assert kinds(events)[-1] == "turn_completed"
    [completed] = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    if "cannot sandbox shell commands" in completed.result:
        sandbox_unavailable(completed.result)
    assert completed.is_error is False
    assert json.loads(completed.result) == {"stdout": "hello\n", "stderr": "", "returncode": 0}

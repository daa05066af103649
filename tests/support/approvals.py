"""Approval scenarios shared by RPC tests: a bundle whose file writes wait for a decision."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.turns import Event, next_event

APPROVE = session_service_pb2.DecideApprovalRequest.DECISION_APPROVE
DENY = session_service_pb2.DecideApprovalRequest.DECISION_DENY
GATED = {"module": "hooks-approval", "config": {"tools": ["write_file"]}}


def write(call_path: str, content: str) -> dict[str, Any]:
    """A scripted write_file call, the call hooks-approval holds in these bundles."""
    return {"name": "write_file", "arguments": {"path": call_path, "content": content}}


def document(
    provider: dict[str, Any], hook: dict[str, Any] | None = None, tools: Sequence[str] = ()
) -> str:
    """A bundle with tool-filesystem whose writes wait for approval (or the given hook)."""
    body = {
        "bundle": {"name": "gated"},
        "session": {"orchestrator": "loop-streaming", "context": "context-simple"},
        "providers": [provider],
        "tools": [{"module": "tool-filesystem"}, *({"module": t} for t in tools)],
        "hooks": [hook or GATED],
    }
    return f"---\n{json.dumps(body)}\n---\nYou write files.\n"


def echo(script: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """provider-echo following script."""
    return {"module": "provider-echo", "config": {"script": list(script)}}


async def gated_session(stack_configs: Any, stack_sessions: Any, text: str) -> str:
    """Stores text as config "gated" and starts a session on it; returns its id."""
    await stack_configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="gated", config=config_pb2.Config(name="gated", yaml_content=text)
        )
    )
    session = await stack_sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="gated", start=True)
    )
    return str(session.session_id)


async def until(call: Any, kind: str) -> list[Event]:
    """Events of a stream up to and including the first of kind."""
    seen = [await next_event(call)]
    while seen[-1].WhichOneof("event") != kind:
        seen.append(await next_event(call))
    return seen


def decide(
    sessions: Any, session_id: str, tool_call_id: str, decision: int, reason: str = ""
) -> Any:
    """DecideApproval with decision as sent on the wire (any number, even an unknown one)."""
    request = session_service_pb2.DecideApprovalRequest(
        session_id=session_id, tool_call_id=tool_call_id, reason=reason
    )
    # Set through the wire form, so a test can also send a number no client library offers.
    request.MergeFromString(
        session_service_pb2.DecideApprovalRequest(decision=APPROVE).SerializeToString()
        if decision == APPROVE
        else bytes([0x18, decision])
    )
    return sessions.DecideApproval(request)

"""A client in another language calls the services from the .proto files alone.

Node's @grpc/proto-loader compiles the protos at run time, with no generated code of ours;
`make test` installs it from the npm registry into tests/node.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from shared.app import ServiceApp

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


async def node_call(address: str, service: str, method: str, request: dict[str, Any]) -> Any:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("Node.js and tests/node/node_modules are required: run `make test`")
    process = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "call.js"),
        address,
        service,
        method,
        json.dumps(request),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout)


@pytest.mark.parametrize(
    ("method", "request_body"),
    [
        ("GetConfig", {"config_id": "c-1", "revision": 3}),
        ("ListConfigs", {"page_size": 10, "view": "CONFIG_VIEW_FULL"}),
        ("WatchConfigs", {"after_sequence": 5}),
    ],
)
async def test_node_calls_config_service(
    config_service: ServiceApp, method: str, request_body: dict[str, Any]
) -> None:
    outcome = await node_call(
        config_service.server.address, "tandem.config.v1.ConfigService", method, request_body
    )
    assert outcome["codeName"] == "UNIMPLEMENTED"
    assert outcome["details"] == f"ConfigService.{method} is not implemented yet."
    assert outcome["hasStatusDetails"] is True


@pytest.mark.parametrize(
    ("method", "request_body"),
    [
        ("CreateSession", {"config_id": "c-1", "tags": {"team": "core"}, "start": True}),
        ("SendMessage", {"session_id": "s-1", "content": "hi", "context": {"fields": {}}}),
    ],
)
async def test_node_calls_session_service(
    session_service: ServiceApp, method: str, request_body: dict[str, Any]
) -> None:
    outcome = await node_call(
        session_service.server.address, "tandem.session.v1.SessionService", method, request_body
    )
    assert outcome["codeName"] == "UNIMPLEMENTED"
    assert outcome["details"] == f"SessionService.{method} is not implemented yet."

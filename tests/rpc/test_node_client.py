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


async def test_node_creates_and_reads_a_config(config_service: ServiceApp) -> None:
    address = config_service.server.address
    service = "tandem.config.v1.ConfigService"
    document = "bundle:\n  name: from-node\n"
    created = await node_call(
        address,
        service,
        "CreateConfig",
        {"config": {"name": "node", "yaml_content": document, "tags": {"lang": "js"}}},
    )
    assert created["code"] == 0
    config = created["response"]
    assert config["revision"] == "1"
    assert config["yaml_content"] == document
    assert config["summary"]["name"] == "from-node"
    fetched = await node_call(address, service, "GetConfig", {"config_id": config["config_id"]})
    assert fetched["response"]["etag"] == config["etag"]
    assert fetched["response"]["tags"] == {"lang": "js"}


@pytest.mark.parametrize(
    ("method", "request_body", "code_name"),
    [
        ("GetConfig", {"config_id": "missing", "revision": 3}, "NOT_FOUND"),
        ("ListConfigs", {"page_size": -1}, "INVALID_ARGUMENT"),
        ("WatchConfigs", {"after_sequence": 5}, "OUT_OF_RANGE"),
    ],
)
async def test_node_gets_rich_errors_from_config_service(
    config_service: ServiceApp, method: str, request_body: dict[str, Any], code_name: str
) -> None:
    outcome = await node_call(
        config_service.server.address, "tandem.config.v1.ConfigService", method, request_body
    )
    assert outcome["codeName"] == code_name
    assert outcome["details"]
    assert outcome["hasStatusDetails"] is True


@pytest.mark.parametrize(
    ("method", "request_body", "code_name"),
    [
        ("CreateSession", {"config_id": "missing", "tags": {"team": "core"}}, "NOT_FOUND"),
        ("GetSession", {"session_id": "missing"}, "NOT_FOUND"),
        ("SendMessage", {"session_id": "s-1", "content": "hi", "context": {}}, "NOT_FOUND"),
        ("StreamEvents", {"session_id": "s-1", "after_sequence": 3}, "NOT_FOUND"),
    ],
)
async def test_node_gets_rich_errors_from_session_service(
    session_service: ServiceApp, method: str, request_body: dict[str, Any], code_name: str
) -> None:
    outcome = await node_call(
        session_service.server.address, "tandem.session.v1.SessionService", method, request_body
    )
    assert outcome["codeName"] == code_name
    assert outcome["details"]
    assert outcome["hasStatusDetails"] is True

"""In-place edits through real stubs: text outside the edit survives byte for byte."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import struct_pb2

from shared._generated.tandem.config.v1 import (
    config_service_pb2,
    config_service_pb2_grpc,
)
from tests.support.configs import create
from tests.support.rpc import error_info, rpc_error

if TYPE_CHECKING:
    Stub = config_service_pb2_grpc.ConfigServiceAsyncStub

COMMENTED = """\
---
# Team bundle: keep the comments, they explain the choices.
bundle:
  name: commented   # inline comment
  version: '1.0'    # quoted on purpose

includes:
  - bundle: foundation

providers:
  # The offline provider for local work.
  - module: provider-echo
    config:
      delay_ms: 5

tools:
  - module: tool-filesystem   # reads only
    config:
      allowed_paths: ["."]
---

# Commented Assistant

Keep *this* markdown exactly as written.
"""


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def test_add_tool_appends_and_keeps_everything_else(configs: Stub) -> None:
    created = await create(configs, "commented", COMMENTED)
    edited = await configs.AddTool(
        config_service_pb2.AddToolRequest(
            config_id=created.config_id,
            module="tool-web",
            source="git+https://example.invalid/tool-web",
            config=struct({"timeout": 30}),
            etag=created.etag,
        )
    )
    assert edited.revision == 2
    expected = COMMENTED.replace(
        '      allowed_paths: ["."]\n',
        '      allowed_paths: ["."]\n'
        "  - module: tool-web\n"
        "    source: git+https://example.invalid/tool-web\n"
        "    config:\n"
        "      timeout: 30\n",
    )
    assert edited.yaml_content == expected
    assert list(edited.summary.tools) == ["tool-filesystem", "tool-web"]


async def test_adding_a_present_module_merges_its_config(configs: Stub) -> None:
    created = await create(configs, "commented", COMMENTED)
    edited = await configs.AddProvider(
        config_service_pb2.AddProviderRequest(
            config_id=created.config_id,
            module="provider-echo",
            config=struct({"delay_ms": 10, "reply": "hi"}),
        )
    )
    assert list(edited.summary.providers) == ["provider-echo"]
    assert edited.yaml_content.count("module: provider-echo") == 1
    assert "delay_ms: 10" in edited.yaml_content
    assert "reply: hi" in edited.yaml_content
    assert "# The offline provider for local work." in edited.yaml_content
    assert edited.yaml_content.endswith("Keep *this* markdown exactly as written.\n")


async def test_remove_tool_and_include_keep_the_rest(configs: Stub) -> None:
    created = await create(configs, "commented", COMMENTED)
    without_tool = await configs.RemoveTool(
        config_service_pb2.RemoveToolRequest(
            config_id=created.config_id, module="tool-filesystem", etag=created.etag
        )
    )
    assert "tool-filesystem" not in without_tool.yaml_content
    assert list(without_tool.summary.tools) == []
    assert without_tool.yaml_content.startswith(COMMENTED.split("tools:")[0].rstrip("\n"))
    assert without_tool.yaml_content.endswith(COMMENTED.split("---\n", 2)[2])
    without_include = await configs.RemoveInclude(
        config_service_pb2.RemoveIncludeRequest(
            config_id=created.config_id, bundle="foundation", etag=without_tool.etag
        )
    )
    assert list(without_include.summary.includes) == []
    assert "# inline comment" in without_include.yaml_content
    assert without_include.revision == 3


async def test_add_include_and_provider_make_revisions(configs: Stub) -> None:
    created = await create(configs, "commented", COMMENTED)
    included = await configs.AddInclude(
        config_service_pb2.AddIncludeRequest(config_id=created.config_id, bundle="team-base")
    )
    assert list(included.summary.includes) == ["foundation", "team-base"]
    # Written the way the list already writes its entries.
    assert included.yaml_content == COMMENTED.replace(
        "  - bundle: foundation\n", "  - bundle: foundation\n  - bundle: team-base\n"
    )
    # Adding it again changes nothing and makes no revision.
    again = await configs.AddInclude(
        config_service_pb2.AddIncludeRequest(config_id=created.config_id, bundle="team-base")
    )
    assert again.revision == included.revision
    provider = await configs.AddProvider(
        config_service_pb2.AddProviderRequest(config_id=created.config_id, module="provider-openai")
    )
    assert list(provider.summary.providers) == ["provider-echo", "provider-openai"]
    assert provider.revision == included.revision + 1


async def test_edit_errors(configs: Stub) -> None:
    created = await create(configs, "commented", COMMENTED)
    missing = await rpc_error(
        configs.RemoveTool(
            config_service_pb2.RemoveToolRequest(config_id=created.config_id, module="tool-nope")
        )
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert error_info(missing).reason == "MODULE_NOT_FOUND"
    stale = await rpc_error(
        configs.AddTool(
            config_service_pb2.AddToolRequest(
                config_id=created.config_id, module="tool-web", etag="stale"
            )
        )
    )
    assert stale.code() is grpc.StatusCode.ABORTED
    no_module = await rpc_error(
        configs.AddTool(config_service_pb2.AddToolRequest(config_id=created.config_id))
    )
    assert no_module.code() is grpc.StatusCode.INVALID_ARGUMENT
    unknown = await rpc_error(
        configs.AddInclude(config_service_pb2.AddIncludeRequest(config_id="nope", bundle="x"))
    )
    assert unknown.code() is grpc.StatusCode.NOT_FOUND
    current = await configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id=created.config_id)
    )
    assert current.revision == 1
    assert current.yaml_content == COMMENTED


async def test_an_edit_that_would_invalidate_the_document_writes_nothing(
    configs: Stub,
) -> None:
    created = await create(configs, "commented", COMMENTED)
    error = await rpc_error(
        configs.AddTool(
            config_service_pb2.AddToolRequest(
                config_id=created.config_id,
                module="tool-web",
                config=struct({"broken": "${UNCLOSED"}),
            )
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    current = await configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id=created.config_id)
    )
    created.ClearField("warnings")
    assert current == created
    assert current.yaml_content == COMMENTED

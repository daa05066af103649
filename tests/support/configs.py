"""Configs through real ConfigService stubs: a sample document, creating, listing, watching."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from tests.support.pair import Stack

if TYPE_CHECKING:
    Stub = config_service_pb2_grpc.ConfigServiceAsyncStub

DOC = """\
---
bundle:
  name: dev-config
  version: 1.0.0

includes:
  - bundle: foundation

providers:
  - module: provider-echo
    config:
      api_key: ${ECHO_KEY}

tools:
  - module: tool-filesystem
    config:
      allowed_paths: [.]
---

# Development Assistant

You are a helpful development assistant.
"""


def doc_named(bundle_name: str) -> str:
    """DOC with another bundle name."""
    return DOC.replace("name: dev-config", f"name: {bundle_name}")


async def create(stub: Stub, name: str, yaml: str = DOC, **kwargs: object) -> config_pb2.Config:
    """CreateConfig of a config called name (tags and request fields in kwargs)."""
    tags = kwargs.pop("tags", {})
    config = config_pb2.Config(name=name, yaml_content=yaml, tags=tags)  # type: ignore[arg-type]
    return await stub.CreateConfig(
        config_service_pb2.CreateConfigRequest(config=config, **kwargs)  # type: ignore[arg-type]
    )


async def create_config(stack: Stack, name: str, yaml: str = DOC) -> config_pb2.Config:
    """CreateConfig of a config whose id and name are both name."""
    return await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config=config_pb2.Config(name=name, yaml_content=yaml), config_id=name
        )
    )


async def list_all(stub: Stub, page_size: int, filter_text: str = "") -> list[config_pb2.Config]:
    """Every config ListConfigs returns, page by page."""
    found: list[config_pb2.Config] = []
    token = ""
    while True:
        page = await stub.ListConfigs(
            config_service_pb2.ListConfigsRequest(
                page_size=page_size, page_token=token, filter=filter_text
            )
        )
        found.extend(page.configs)
        token = page.next_page_token
        if not token:
            return found


def watch(
    stub: Stub, after: int
) -> grpc.aio.UnaryStreamCall[config_service_pb2.WatchConfigsRequest, config_pb2.ConfigChange]:
    """WatchConfigs from after_sequence after."""
    return stub.WatchConfigs(config_service_pb2.WatchConfigsRequest(after_sequence=after))


async def take(
    stream: AsyncIterator[config_pb2.ConfigChange], n: int
) -> list[config_pb2.ConfigChange]:
    """The next n changes of a watch."""
    changes = []
    async for change in stream:
        changes.append(change)
        if len(changes) == n:
            break
    return changes

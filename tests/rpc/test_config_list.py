"""ListConfigs: page sizes, opaque tokens, filters, views and totals."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from tests.support.configs import DOC, create, doc_named, list_all
from tests.support.rpc import detail, error_info, rpc_error

if TYPE_CHECKING:
    Stub = config_service_pb2_grpc.ConfigServiceAsyncStub


@pytest.mark.timeout(180)
async def test_a_thousand_configs_are_each_listed_exactly_once(configs: Stub) -> None:
    limit = asyncio.Semaphore(16)

    async def make(n: int) -> str:
        async with limit:
            return (await create(configs, f"cfg-{n:04d}", DOC)).config_id

    created = set(await asyncio.gather(*(make(n) for n in range(1000))))
    first = await configs.ListConfigs(config_service_pb2.ListConfigsRequest(page_size=0))
    assert len(first.configs) == 50  # the default page size
    assert first.total_size == 1000
    listed = await list_all(configs, page_size=37)
    ids = [c.config_id for c in listed]
    assert len(ids) == 1000
    assert set(ids) == created
    big = await configs.ListConfigs(config_service_pb2.ListConfigsRequest(page_size=5000))
    assert len(big.configs) == 1000  # capped at the maximum, which is 1000


async def test_filters_on_name_tags_and_bundle_name(configs: Stub) -> None:
    await create(configs, "alpha", doc_named("web"), tags={"team": "core", "env": "dev"})
    await create(configs, "beta", doc_named("web"), tags={"team": "ml"})
    await create(configs, "gamma", doc_named("batch"), tags={"team": "core"})

    async def names(filter_text: str) -> list[str]:
        return sorted(c.name for c in await list_all(configs, 2, filter_text))

    assert await names('name = "alpha"') == ["alpha"]
    assert await names("tags.team = core") == ["alpha", "gamma"]
    assert await names('bundle.name = "web"') == ["alpha", "beta"]
    assert await names('bundle.name = "web" AND tags.team = "core"') == ["alpha"]
    assert await names("tags.team != core") == ["beta"]
    assert await names("tags.env != dev") == ["beta", "gamma"]
    assert await names('name = "*a"') == ["alpha", "beta", "gamma"]
    assert await names('name = "g*"') == ["gamma"]
    assert await names("tags.missing = x") == []
    counted = await configs.ListConfigs(
        config_service_pb2.ListConfigsRequest(filter="tags.team = core", page_size=1)
    )
    assert counted.total_size == 2
    assert len(counted.configs) == 1


async def test_views_control_whether_content_is_returned(configs: Stub) -> None:
    await create(configs, "alpha")
    basic = await configs.ListConfigs(config_service_pb2.ListConfigsRequest())
    assert basic.configs[0].yaml_content == ""
    assert basic.configs[0].summary.name == "dev-config"
    full = await configs.ListConfigs(
        config_service_pb2.ListConfigsRequest(view=config_pb2.CONFIG_VIEW_FULL)
    )
    assert full.configs[0].yaml_content == DOC


async def test_page_token_errors(configs: Stub) -> None:
    for n in range(3):
        await create(configs, f"c{n}", tags={"team": "core"})
    page = await configs.ListConfigs(
        config_service_pb2.ListConfigsRequest(page_size=1, filter="tags.team = core")
    )
    changed = await rpc_error(
        configs.ListConfigs(
            config_service_pb2.ListConfigsRequest(
                page_size=1, filter="tags.team = ml", page_token=page.next_page_token
            )
        )
    )
    assert changed.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(changed).reason == "PAGE_TOKEN_MISMATCH"
    garbage = await rpc_error(
        configs.ListConfigs(config_service_pb2.ListConfigsRequest(page_token="not-a-token!"))
    )
    assert garbage.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(garbage).reason == "INVALID_PAGE_TOKEN"
    # A different page size with the same filter is fine.
    rest = await configs.ListConfigs(
        config_service_pb2.ListConfigsRequest(
            page_size=10, filter="tags.team = core", page_token=page.next_page_token
        )
    )
    assert len(rest.configs) == 2


async def test_negative_page_size_and_bad_filters_are_invalid(configs: Stub) -> None:
    negative = await rpc_error(
        configs.ListConfigs(config_service_pb2.ListConfigsRequest(page_size=-1))
    )
    assert negative.code() is grpc.StatusCode.INVALID_ARGUMENT
    [violation] = detail(negative, error_details_pb2.BadRequest).field_violations
    assert violation.field == "page_size"
    for bad in ("owner = me", "name =", 'name = "x" OR name = "y"', "name ~ x"):
        error = await rpc_error(
            configs.ListConfigs(config_service_pb2.ListConfigsRequest(filter=bad))
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, bad
        assert error_info(error).reason == "INVALID_FILTER"

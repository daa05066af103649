"""Hostile documents are refused with INVALID_ARGUMENT and a violation; nothing stored changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared.app import ServiceApp
from tests.support.configs import DOC, create
from tests.support.rpc import detail, rpc_error

if TYPE_CHECKING:
    Stub = config_service_pb2_grpc.ConfigServiceAsyncStub

BILLION_LAUGHS = """\
bundle:
  name: lol
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

DUPLICATE_KEYS = "bundle:\n  name: one\n  name: two\n"
PYTHON_TAG = 'bundle:\n  name: x\nexploit: !!python/object/apply:os.system ["true"]\n'
TEN_MIB = "bundle:\n  name: big\ndescription: " + "x" * (10 * 1024 * 1024) + "\n"

HOSTILE = {
    "billion-laughs": BILLION_LAUGHS,
    "duplicate-keys": DUPLICATE_KEYS,
    "python-tag": PYTHON_TAG,
    "ten-mib": TEN_MIB,
}


async def snapshot(stub: Stub, config_id: str) -> tuple[config_pb2.Config, int]:
    current = await stub.GetConfig(config_service_pb2.GetConfigRequest(config_id=config_id))
    revisions = await stub.ListConfigRevisions(
        config_service_pb2.ListConfigRevisionsRequest(config_id=config_id)
    )
    return current, revisions.total_size


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_documents_are_refused_on_create_update_and_validate(
    configs: Stub, name: str
) -> None:
    document = HOSTILE[name]
    stored = await create(configs, "victim")
    before = await snapshot(configs, stored.config_id)

    refused = await rpc_error(create(configs, "attacker", document))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = detail(refused, error_details_pb2.BadRequest).field_violations
    assert violations
    assert all(v.field.startswith("config.yaml_content") for v in violations)

    update = await rpc_error(
        configs.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(config_id=stored.config_id, yaml_content=document)
            )
        )
    )
    assert update.code() is grpc.StatusCode.INVALID_ARGUMENT

    validated = await configs.ValidateConfig(
        config_service_pb2.ValidateConfigRequest(yaml_content=document)
    )
    assert not validated.valid
    assert any(v.severity == config_pb2.SEVERITY_ERROR for v in validated.violations)

    assert await snapshot(configs, stored.config_id) == before
    listed = await configs.ListConfigs(config_service_pb2.ListConfigsRequest())
    assert [c.name for c in listed.configs] == ["victim"]


async def test_violations_point_at_the_problem(configs: Stub) -> None:
    duplicate = await configs.ValidateConfig(
        config_service_pb2.ValidateConfigRequest(yaml_content=DUPLICATE_KEYS)
    )
    [error] = [v for v in duplicate.violations if v.severity == config_pb2.SEVERITY_ERROR]
    assert error.line == 3
    tagged = await configs.ValidateConfig(
        config_service_pb2.ValidateConfigRequest(yaml_content=PYTHON_TAG)
    )
    [error] = [v for v in tagged.violations if v.severity == config_pb2.SEVERITY_ERROR]
    assert error.line == 3
    assert "python/object" in error.message


async def test_invalid_utf8_is_invalid_argument_naming_the_field(
    config_app: ServiceApp, configs: Stub
) -> None:
    stored = await create(configs, "victim")
    before = await snapshot(configs, stored.config_id)
    good = config_service_pb2.CreateConfigRequest(
        config=config_pb2.Config(name="bad-bytes", yaml_content="bundle:\n  name: \x01\n")
    ).SerializeToString()
    # Swap the marker byte for one that can never appear in UTF-8.
    raw = good.replace(b"\x01", b"\xff")
    async with grpc.aio.insecure_channel(config_app.server.address) as channel:
        call = channel.unary_unary(
            "/tandem.config.v1.ConfigService/CreateConfig",
            request_serializer=lambda data: data,
            response_deserializer=config_pb2.Config.FromString,
        )
        error = await rpc_error(call(raw))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    [violation] = detail(error, error_details_pb2.BadRequest).field_violations
    assert violation.field == "config.yaml_content"
    assert "line 2, column 9" in violation.description
    assert await snapshot(configs, stored.config_id) == before


async def test_documents_just_under_the_cap_are_accepted(configs: Stub) -> None:
    padding = "# " + "x" * 1000 + "\n"
    document = DOC + padding * 200  # about 200 KiB of comments, under 256 KiB
    created = await create(configs, "big", document)
    assert created.yaml_content == document

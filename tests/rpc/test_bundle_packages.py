"""Imported bundle packages run as their authors wrote them: references, composition, turns.

The two example packages in ../shared/examples/packages are imported through ImportBundle,
then prepared and run through real stubs on both databases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from ruamel.yaml import YAML

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.configs import create_config
from tests.support.llm_servers import LlmServer, llm_server, openai_text_reply, stream
from tests.support.pair import Stack
from tests.support.rpc import detail, error_info, rich_status, rpc_error
from tests.support.sandbox import TEST_BUNDLE_ENV_ALLOW
from tests.support.turns import collect, kinds, send

# Copies of ../shared/examples/packages, so the suite needs nothing outside the repository.
PACKAGES = Path(__file__).resolve().parents[1] / "fixtures" / "packages"
DESIGN_KIT_SOURCE = "git+https://example.invalid/acme/design-kit@main"


def _files(folder: Path) -> list[config_service_pb2.BundleFile]:
    return [
        config_service_pb2.BundleFile(path=str(p.relative_to(folder)), content=p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


async def import_examples(stack: Stack) -> None:
    """Both example packages, the design kit under the address acme includes it by."""
    await stack.configs.ImportBundle(
        config_service_pb2.ImportBundleRequest(
            files=_files(PACKAGES / "design-kit"), source_uri=DESIGN_KIT_SOURCE
        )
    )
    await stack.configs.ImportBundle(
        config_service_pb2.ImportBundleRequest(
            files=_files(PACKAGES / "acme"), source_uri="git+https://example.invalid/acme/acme"
        )
    )


@pytest.fixture
def acme_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator who lets bundles read ACME_* (set before the services are built)."""
    monkeypatch.setenv("TANDEM_BUNDLE_ENV_ALLOW", TEST_BUNDLE_ENV_ALLOW + ",ACME_*")
    monkeypatch.setenv("ACME_LLM_KEY", "acme-key-for-tests")


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


async def test_composing_the_example_package_follows_the_amplifier_rules(
    acme_allowed: None, stack: Stack
) -> None:
    await import_examples(stack)
    prepared = await stack.sessions.PrepareConfig(
        session_service_pb2.PrepareConfigRequest(config_id=await _id_of(stack, "acme"))
    )
    assert prepared.valid, prepared.violations
    # Agents by name, each once.
    assert sorted((a.name, a.source) for a in prepared.agents) == [
        ("critic", "design-kit:agents/critic"),
        ("reviewer", "acme:agents/reviewer"),
    ]
    # Context: the includes' first, in include order, then acme's own, then its mention.
    assert [(c.name, c.origin) for c in prepared.context] == [
        ("acme:context/review-checklist.md", "context.include of config:acme:behaviors/review"),
        ("design-kit:context/palette.md", "context.include of config:design-kit:behaviors/design"),
        ("acme:context/style.md", "context.include of config:acme"),
        ("acme:context/principles.md", "@mention in config:acme"),
    ]
    composed = YAML(typ="safe").load(prepared.composed_yaml)
    assert composed["session"]["orchestrator"]["config"]["max_iterations"] == 8
    assert prepared.default_provider == "provider-openai"
    [openai] = [p for p in composed["providers"] if p["module"] == "provider-openai"]
    assert openai["config"]["default_model"] == "acme-large"
    assert [h["module"] for h in composed["hooks"]] == ["hooks-logging"]
    assert prepared.composed_from[-1] == "config:acme"
    assert "bundle:" not in prepared.instruction
    assert "Acme assistant" in prepared.instruction


async def test_a_turn_on_the_package_reaches_the_model_by_default_model(
    acme_allowed: None, server: LlmServer, stack: Stack
) -> None:
    await import_examples(stack)
    document = {
        "bundle": {"name": "team"},
        "includes": [{"bundle": "acme:behaviors/review"}],
        "providers": [
            {
                "module": "provider-openai",
                "config": {
                    "default_model": "some-model",
                    "base_url": f"{server.origin}/v1",
                    "api_key": "${ACME_LLM_KEY}",
                    "max_retries": 0,
                },
            }
        ],
    }
    await create_config(stack, "team", json.dumps(document))
    server.script(stream(openai_text_reply(["Reviewed."])))
    session = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="team", start=True)
    )
    events = await collect(send(stack.sessions, session.session_id, "review this"))
    assert kinds(events)[-1] == "turn_completed"
    request = server.requests[0]
    assert request.body["model"] == "some-model"
    assert request.headers["authorization"] == "Bearer acme-key-for-tests"
    system = request.body["messages"][0]
    # The behavior's context file reached the model's system context.
    assert system["role"] == "system"
    assert "Review checklist" in system["content"]


async def test_missing_references_are_located_errors_that_fit_a_default_client(
    stack: Stack,
) -> None:
    long = "x" * 100
    includes = [{"bundle": f"nowhere-{i}:behaviors/{long}-{i}"} for i in range(50)]
    document = json.dumps({"bundle": {"name": "many"}, "includes": includes})
    await create_config(stack, "many", document)
    error = await rpc_error(
        stack.sessions.CreateSession(session_service_pb2.CreateSessionRequest(config_id="many"))
    )
    # A Python client with default options reads the real status and its details.
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    status = rich_status(error)
    assert len(status.SerializeToString()) < 4096
    assert error_info(error).reason == "INCLUDE_NOT_FOUND"
    listed = detail(error, error_details_pb2.PreconditionFailure).violations
    assert 0 < len(listed) < 50
    # The dry run lists all 50 in its body.
    report = await stack.sessions.PrepareConfig(
        session_service_pb2.PrepareConfigRequest(config_id="many")
    )
    assert not report.valid
    assert len(report.violations) == 50


async def _id_of(stack: Stack, name: str) -> str:
    page = await stack.configs.ListConfigs(
        config_service_pb2.ListConfigsRequest(filter=f"name = {json.dumps(name)}")
    )
    [config] = page.configs
    return str(config.config_id)


async def test_a_behavior_that_only_tunes_the_loop_keeps_the_default_module(
    stack: Stack,
) -> None:
    await import_examples(stack)
    document = json.dumps({"bundle": {"name": "calm"}, "includes": ["acme:behaviors/quiet"]})
    await create_config(stack, "calm", document)
    prepared = await stack.sessions.PrepareConfig(
        session_service_pb2.PrepareConfigRequest(config_id="calm")
    )
    assert prepared.valid, prepared.violations
    [loop] = [m for m in prepared.modules if m.kind == "orchestrator"]
    assert loop.module == "loop-basic"
    composed = YAML(typ="safe").load(prepared.composed_yaml)
    assert composed["session"]["orchestrator"] == {"config": {"max_iterations": 4}}


async def test_keys_a_module_does_not_read_and_a_missing_provider_are_located_warnings(
    stack: Stack,
) -> None:
    document = json.dumps(
        {
            "bundle": {"name": "quiet-typos"},
            "includes": ["tandem:dev"],
            "tools": [{"module": "tool-filesystem", "config": {"extended_thinking": True}}],
        }
    )
    await create_config(stack, "typos", document)
    prepared = await stack.sessions.PrepareConfig(
        session_service_pb2.PrepareConfigRequest(config_id="typos")
    )
    assert prepared.valid
    assert prepared.default_provider == ""
    warnings = {w.field: w.message for w in prepared.warnings}
    assert (
        "tool-filesystem does not read 'extended_thinking'"
        in warnings["tools[0].config.extended_thinking"]
    )
    assert "no provider" in warnings["providers"]
    assert all(w.severity == config_pb2.SEVERITY_WARNING for w in prepared.warnings)

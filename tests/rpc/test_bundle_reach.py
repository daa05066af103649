"""What a tenant's bundle can reach of the server: environment variables, secrets, files.

Each test plays the attacker of issue 13's first two findings, through real stubs on both
databases: a bundle that echoes the server's environment back, and a bundle that points the
file tool at the host.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.configs import create_config
from tests.support.llm_servers import llm_server, openai_text_reply, stream
from tests.support.pair import Stack
from tests.support.rpc import detail, error_info, rich_status, rpc_error, seed_workspace
from tests.support.sandbox import TEST_BUNDLE_ENV_ALLOW
from tests.support.turns import active_session, bundle, collect, kinds, send, text_of

DATABASE_URL = "postgresql+psycopg://tandem:db-password-1@db.internal/tandem"
SERVICE_KEY = "svc-key-0123456789abcdef"
OPENAI_KEY = "sk-live-openai-0123456789abcdefghij"


@pytest.fixture
def server_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an operator's SessionService has in its environment."""
    monkeypatch.setenv("TANDEM_DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("TANDEM_CONFIG_SERVICE_API_KEY_BACKUP", SERVICE_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)


def _everything(error: grpc.aio.AioRpcError) -> str:
    """Every byte a client receives for an error: message and rich details."""
    return (error.details() or "") + repr(rich_status(error))


async def test_a_bundle_cannot_echo_the_server_environment(
    server_environment: None, stack: Stack
) -> None:
    reply = (
        "db=${TANDEM_DATABASE_URL} key=${TANDEM_CONFIG_SERVICE_API_KEY_BACKUP} "
        "openai=${OPENAI_API_KEY} none=${TANDEM_NOT_SET_ANYWHERE}"
    )
    document = bundle({"script": [{"reply": reply}]})
    error = await rpc_error(active_session(stack, document, "leak"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    violations = detail(error, error_details_pb2.PreconditionFailure).violations
    assert [(v.type, v.subject) for v in violations] == [
        ("ENV_NOT_AVAILABLE", "providers[0].config.script[0].reply")
    ] * 4
    seen = _everything(error)
    for value in (DATABASE_URL, SERVICE_KEY, OPENAI_KEY):
        assert value not in seen
    # A variable that is set and one that exists nowhere get the same answer.
    assert len({v.description for v in violations}) == 1
    assert "TANDEM_BUNDLE_ENV_ALLOW" in violations[0].description
    assert "OPENAI_API_KEY" not in violations[0].description


@pytest.fixture
def openai_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator who lets bundles use the OpenAI key (set before the stack is built)."""
    monkeypatch.setenv("TANDEM_BUNDLE_ENV_ALLOW", TEST_BUNDLE_ENV_ALLOW + ",OPENAI_*")


async def test_an_allowed_secret_reaches_only_a_credential_setting(
    server_environment: None, openai_allowed: None, stack: Stack
) -> None:
    document = bundle({"script": [{"reply": "key=${OPENAI_API_KEY}"}]})
    error = await rpc_error(active_session(stack, document, "reply-leak"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    [violation] = detail(error, error_details_pb2.PreconditionFailure).violations
    assert violation.type == "SECRET_OUTSIDE_CREDENTIAL"
    assert OPENAI_KEY not in _everything(error)
    # As a credential it prepares; provider-echo does not use it, so nothing can show it.
    document = bundle({"api_key": "${OPENAI_API_KEY}", "script": [{"reply": "fine"}]})
    session_id = await active_session(stack, document, "credential")
    events = await collect(send(stack.sessions, session_id, "hi"))
    assert kinds(events)[-1] == "turn_completed"
    assert OPENAI_KEY not in str(events)
    prepared = await stack.sessions.PrepareConfig(
        session_service_pb2.PrepareConfigRequest(config_id="credential")
    )
    assert OPENAI_KEY not in str(prepared)


async def test_an_allowed_plain_variable_and_its_default_expand_anywhere(
    stack: Stack,
) -> None:
    document = bundle({"script": [{"reply": "model=${TANDEM_UNSET_MODEL:echo-large}"}]})
    session_id = await active_session(stack, document, "plain")
    events = await collect(send(stack.sessions, session_id, "hi"))
    assert text_of(events) == "model=echo-large"
    # A name the operator did not allow is refused even with a default.
    document = bundle({"script": [{"reply": "${HOME:nowhere}"}]})
    error = await rpc_error(active_session(stack, document, "home"))
    assert error_info(error).reason == "ENV_NOT_AVAILABLE"


TENANT_TOKEN = "tenant-own-token-42"


@pytest.fixture
def tenant_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A mounted secrets folder with one secret of the default tenant."""
    folder = tmp_path / "secrets"
    (folder / "default").mkdir(parents=True)
    (folder / "default" / "TEAM_LLM_CREDENTIAL").write_text(TENANT_TOKEN + "\n")
    (folder / "other").mkdir()
    (folder / "other" / "OTHER_TOKEN").write_text("not-yours")
    monkeypatch.setenv("TANDEM_TENANT_SECRETS_DIR", str(folder))
    return folder


async def test_a_tenant_secret_authenticates_a_provider_and_nothing_else(
    tenant_secrets: Path, stack: Stack
) -> None:
    with llm_server() as server:
        server.script(stream(openai_text_reply(["hello"], completion_tokens=1)))
        config = {
            "model": "m",
            "base_url": f"{server.origin}/v1",
            "max_retries": 0,
            "api_key": "${TEAM_LLM_CREDENTIAL}",
        }
        document = (
            "---\n"
            + json.dumps(
                {
                    "bundle": {"name": "own"},
                    "providers": [{"module": "provider-openai", "config": config}],
                }
            )
            + "\n---\nHi.\n"
        )
        session_id = await active_session(stack, document, "own")
        events = await collect(send(stack.sessions, session_id, "hi"))
        assert kinds(events)[-1] == "turn_completed"
        assert server.requests[0].headers["authorization"] == f"Bearer {TENANT_TOKEN}"
    assert TENANT_TOKEN not in str(events)
    # The same secret as a reply is refused; another tenant's secret does not resolve.
    document = bundle({"script": [{"reply": "${TEAM_LLM_CREDENTIAL}"}]})
    error = await rpc_error(active_session(stack, document, "own-reply"))
    assert error_info(error).reason == "SECRET_OUTSIDE_CREDENTIAL"
    document = bundle({"api_key": "${OTHER_TOKEN}", "script": [{"reply": "x"}]})
    error = await rpc_error(active_session(stack, document, "theirs"))
    assert error_info(error).reason == "ENV_NOT_AVAILABLE"


def _reader_script(path: str) -> dict[str, Any]:
    return {
        "script": [
            {"tool_calls": [{"name": "read_file", "arguments": {"path": path}}]},
            {"reply": "done"},
        ]
    }


@pytest.mark.parametrize("key", ["allowed_paths", "allowed_write_paths"])
@pytest.mark.parametrize("entry", ["/", "/etc", "..", "../../", "/proc/self/root"])
async def test_a_bundle_cannot_point_the_file_tool_at_the_host(
    stack: Stack, key: str, entry: str
) -> None:
    tools = [{"module": "tool-filesystem", "config": {key: [entry]}}]
    error = await rpc_error(active_session(stack, bundle({}, tools=tools), "host"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    [violation] = detail(error, error_details_pb2.PreconditionFailure).violations
    assert violation.type == "TOOL_PATH_NOT_ALLOWED"
    assert violation.subject == f"tools[0].config.{key}"


async def test_the_shipped_dev_bundle_confines_the_file_tool_to_the_workspace(
    stack: Stack, tmp_path: Path
) -> None:
    keys = tmp_path.parent / "keys.yaml"  # outside the test's allowed root
    keys.write_text("keys: []\n")
    targets = ["/etc/passwd", str(keys), os.getcwd(), "../", "../../default"]
    script = [
        {"tool_calls": [{"name": "read_file", "arguments": {"path": t}} for t in targets]},
        {
            "tool_calls": [
                {"name": "write_file", "arguments": {"path": "mine.txt", "content": "ok"}},
                {"name": "list_directory", "arguments": {"path": "."}},
            ]
        },
        {"reply": "done"},
    ]
    document = (
        "---\n"
        + json.dumps(
            {
                "bundle": {"name": "found"},
                "includes": ["tandem:dev"],
                "providers": [{"module": "provider-echo", "config": {"script": script}}],
            }
        )
        + "\n---\nHelp.\n"
    )
    session_id = await active_session(stack, document, "found")
    events = await collect(send(stack.sessions, session_id, "go"))
    results = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert [r.is_error for r in results] == [True] * len(targets) + [False, False]
    assert all("root:" not in r.result for r in results)
    workspace = Path(os.environ["TANDEM_WORKSPACE_ROOT"]) / "default" / session_id
    assert (workspace / "mine.txt").read_text() == "ok"
    assert results[-1].result == "mine.txt"
    keys.unlink()


async def test_sessions_cannot_reach_each_other_and_deletion_removes_the_workspace(
    stack: Stack,
) -> None:
    tools = [{"module": "tool-filesystem"}]
    victim = await active_session(stack, bundle({}, tools=tools), "victim")
    seed_workspace(victim, {"diary.txt": "private"})
    attacker_script = _reader_script(f"../{victim}/diary.txt")
    attacker = await active_session(stack, bundle(attacker_script, tools=tools), "attacker")
    events = await collect(send(stack.sessions, attacker, "go"))
    [result] = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert result.is_error
    assert "private" not in result.result
    workspace = Path(os.environ["TANDEM_WORKSPACE_ROOT"]) / "default" / victim
    assert workspace.is_dir()
    await stack.sessions.DeleteSession(session_service_pb2.DeleteSessionRequest(session_id=victim))
    assert not workspace.exists()


@pytest.fixture
def public_egress_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default list: the two public APIs, nothing on this machine or its network."""
    monkeypatch.delenv("TANDEM_EGRESS_ALLOW")


@pytest.mark.parametrize(
    "base_url",
    [
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://127.0.0.1:5432/v1",  # the database's port
        "http://localhost:50051",  # ConfigService
        "file:///etc/passwd",
        "https://attacker.example/v1",
        "https://api.openai.com.attacker.example/v1",
        "http://api.openai.com/v1",  # the allowed host on a port the operator did not name
    ],
)
async def test_a_provider_cannot_be_pointed_at_a_host_the_operator_did_not_allow(
    public_egress_only: None, stack: Stack, base_url: str
) -> None:
    config = {"model": "m", "base_url": base_url, "api_key": "${TANDEM_TEST_SECRET}"}
    document = json.dumps(
        {"bundle": {"name": "ssrf"}, "providers": [{"module": "provider-openai", "config": config}]}
    )
    error = await rpc_error(active_session(stack, document, "ssrf"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    [violation] = detail(error, error_details_pb2.PreconditionFailure).violations
    assert (violation.type, violation.subject) == (
        "EGRESS_NOT_ALLOWED",
        "providers[0].config.base_url",
    )
    assert "TANDEM_EGRESS_ALLOW" in violation.description


async def test_the_default_endpoints_are_allowed(public_egress_only: None, stack: Stack) -> None:
    for module in ("provider-openai", "provider-anthropic"):
        config = {"model": "m", "api_key": "${TANDEM_TEST_SECRET}"}
        document = json.dumps(
            {"bundle": {"name": "public"}, "providers": [{"module": module, "config": config}]}
        )
        prepared = await stack.sessions.PrepareConfig(
            session_service_pb2.PrepareConfigRequest(
                config_id=(await create_config(stack, f"p-{module}", document)).config_id
            )
        )
        # Prepared: problems would have been FAILED_PRECONDITION.
        assert [m.module for m in prepared.modules if m.kind == "provider"] == [module]

"""tool-bash run directly: every command is hostile, and must stay inside its sandbox.

The tests start real commands in the sandbox the module builds (namespaces, a fresh root, a
pids cgroup, rlimits) and look at the host afterwards: which files exist, which processes are
left, whether a socket on the host was reachable.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from session_service.modules.bash import OFF_MESSAGE, BashTool
from session_service.tool_policy import BashPolicy, ToolPolicy
from session_service.turns.protocols import ToolResult
from session_service.workspace import Sandbox
from tests.support.sandbox import sandbox_unavailable


def _sandbox(tmp_path: Path, **policy: Any) -> Sandbox:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    settings: dict[str, Any] = {"enabled": True, "timeout_seconds": 20.0, **policy}
    return Sandbox(workspace.resolve(), (), ToolPolicy(bash=BashPolicy(**settings)))


def _tool(tmp_path: Path, config: Mapping[str, Any] | None = None, **policy: Any) -> BashTool:
    return BashTool(config or {}, _sandbox(tmp_path, **policy))


async def _run(tool: BashTool, command: str, **arguments: Any) -> ToolResult:
    result = await tool.call("bash", {"command": command, **arguments})
    if "cannot sandbox shell commands" in result.content:
        sandbox_unavailable(result.content)
    return result


def _output(result: ToolResult) -> dict[str, Any]:
    text = result.content
    parsed = json.loads(text[text.index("{") :])
    assert isinstance(parsed, dict)
    return parsed


def _marked_processes(marker: str) -> list[int]:
    """Processes anywhere on the host whose command line holds marker (not this test's)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(name))
    return found


def _on_host(path: str) -> bool:
    return os.path.lexists(path)


def _unique_seconds() -> str:
    """A sleep duration no other process on the machine is using: it marks the sleep."""
    return f"{30 + uuid.uuid4().int % 10**6 / 10**7:.7f}"


def test_the_module_is_off_unless_the_operator_enables_it(tmp_path: Path) -> None:
    off = Sandbox(tmp_path, (), ToolPolicy(bash=BashPolicy(enabled=False)))
    assert BashTool.check_config({}, off) == [("module", OFF_MESSAGE)]
    assert "TANDEM_TOOLS_BASH_ENABLED=true" in OFF_MESSAGE
    with pytest.raises(ValueError, match="TANDEM_TOOLS_BASH_ENABLED"):
        BashTool({}, off)
    assert BashTool.check_config({}, _sandbox(tmp_path)) == []


def test_bundle_settings_only_lower_the_operator_ceilings(tmp_path: Path) -> None:
    tool = _tool(tmp_path, {"timeout": 999, "max_output_bytes": 10**9}, timeout_seconds=5.0)
    assert (tool.timeout_seconds, tool.max_output_bytes) == (5.0, 64 * 1024)
    lower = _tool(tmp_path, {"timeout": 2, "max_output_bytes": 100}, timeout_seconds=5.0)
    assert (lower.timeout_seconds, lower.max_output_bytes) == (2.0, 100)
    problems = BashTool.check_config(
        {"timeout": -1, "max_output_bytes": "lots"}, _sandbox(tmp_path)
    )
    assert [key for key, _ in problems] == ["timeout", "max_output_bytes"]
    with pytest.raises(ValueError, match="timeout"):
        _tool(tmp_path, {"timeout": True})


def test_the_spec_keeps_amplifier_names(tmp_path: Path) -> None:
    [spec] = _tool(tmp_path).specs()
    assert spec.name == "bash"
    assert spec.parameters["required"] == ["command"]
    assert set(spec.parameters["properties"]) == {"command", "timeout", "run_in_background"}


async def test_a_command_runs_in_the_workspace(tmp_path: Path) -> None:
    tool = _tool(tmp_path)
    result = await _run(tool, "echo hello > f.txt && cat f.txt && pwd && echo oops >&2")
    assert result.is_error is False
    workspace = tmp_path / "ws"
    assert _output(result) == {
        "stdout": f"hello\n{workspace.resolve()}\n",
        "stderr": "oops\n",
        "returncode": 0,
    }
    assert (workspace / "f.txt").read_text() == "hello\n"


async def test_a_failing_command_is_an_error_with_its_exit_code(tmp_path: Path) -> None:
    result = await _run(_tool(tmp_path), "echo partial; exit 3")
    assert result.is_error is True
    assert _output(result) == {"stdout": "partial\n", "stderr": "", "returncode": 3}


async def test_background_mode_is_refused(tmp_path: Path) -> None:
    result = await _tool(tmp_path).call(
        "bash", {"command": "touch started", "run_in_background": True}
    )
    assert result.is_error is True
    assert "run_in_background is not supported" in result.content
    assert not (tmp_path / "ws" / "started").exists()


async def test_a_timeout_kills_the_command_and_reports_it(tmp_path: Path) -> None:
    seconds = _unique_seconds()
    tool = _tool(tmp_path)
    result = await _run(tool, f"echo before; sleep {seconds}; echo after", timeout=1)
    assert result.is_error is True
    assert result.content.startswith("Command timed out after 1 seconds")
    assert _output(result)["stdout"] == "before\n"
    assert _marked_processes(seconds) == []


async def test_the_model_cannot_raise_the_timeout(tmp_path: Path) -> None:
    tool = _tool(tmp_path, {"timeout": 1})
    result = await _run(tool, f"sleep {_unique_seconds()}", timeout=600)
    assert result.content.startswith("Command timed out after 1 seconds")


async def test_a_cancelled_call_leaves_no_process_behind(tmp_path: Path) -> None:
    seconds = _unique_seconds()
    tool = _tool(tmp_path)
    await _run(tool, "true")  # skips here if the machine cannot sandbox
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(tool.call("bash", {"command": f"sleep {seconds}"}), 1)
    assert _marked_processes(seconds) == []


async def test_a_flood_of_output_is_cut_to_the_limit(tmp_path: Path) -> None:
    tool = _tool(tmp_path, max_output_bytes=4096)
    result = await _run(tool, "yes | head -c 10000000")
    output = _output(result)
    assert output["returncode"] == 0
    assert output["truncated"] is True
    assert output["stdout_total_bytes"] == 10_000_000
    note = re.search(r"\n\[\.\.\.([\d,]+) bytes dropped[^\n]*\.\.\.\]\n", output["stdout"])
    assert note is not None
    head, tail = output["stdout"][: note.start()], output["stdout"][note.end() :]
    assert set(head + tail) == {"y", "\n"}
    assert len(head) + len(tail) <= 4096
    assert int(note.group(1).replace(",", "")) == 10_000_000 - len(head) - len(tail)


async def test_a_fork_bomb_is_contained(tmp_path: Path) -> None:
    marker = f"tandem-bomb-{uuid.uuid4().hex}"
    tool = _tool(tmp_path, max_processes=32)
    result = await _run(tool, f":(){{ :|:& }};:; sleep 30 # {marker}", timeout=3)
    assert result.is_error is True
    assert "timed out" in result.content
    assert _marked_processes(marker) == []


async def test_writes_outside_the_workspace_do_not_reach_the_host(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for commands")
    tool = _tool(tmp_path)
    for command in (
        f"echo x > {outside}/written.txt",
        f"cat {outside}/secret.txt",
        "touch /usr/tandem-escape",
        "touch /etc/tandem-escape",
        "mount -o remount,rw /usr && touch /usr/tandem-escape",
        # The namespace's root is the host's root: kernel settings must stay out of reach.
        "echo tandem > /proc/sys/kernel/hostname",
    ):
        result = await _run(tool, command)
        assert result.is_error is True, command
        assert "not for commands" not in result.content
    # A relative escape lands in the sandbox's private /tmp, never on the host.
    await _run(tool, "echo x > ../escape.txt")
    assert not (outside / "written.txt").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert not _on_host("/usr/tandem-escape")
    assert not _on_host("/etc/tandem-escape")
    inside = await _run(tool, "echo ok > inside.txt")
    assert inside.is_error is False
    assert (tmp_path / "ws" / "inside.txt").read_text() == "ok\n"


async def test_the_server_environment_is_not_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "TANDEM_DATABASE_URL": "postgresql://tandem:pw-123@db/tandem",
        "OPENAI_API_KEY": "sk-openai-secret-456",
        "ANTHROPIC_API_KEY": "sk-ant-secret-789",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    tool = _tool(tmp_path)
    result = await _run(tool, "env; cat /proc/[0-9]*/environ | tr '\\0' '\\n'")
    stdout = _output(result)["stdout"]
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in stdout
    for name, value in secrets.items():
        assert name not in stdout
        assert value not in stdout
    assert "TANDEM_" not in stdout


async def test_no_network_unless_the_operator_allows_it(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"
        closed = await _run(_tool(tmp_path), probe)
        assert closed.is_error is True
        assert "connected" not in _output(closed)["stdout"]
        interfaces = await _run(_tool(tmp_path), "cat /proc/net/dev")
        assert [
            line.split(":")[0].strip()
            for line in _output(interfaces)["stdout"].splitlines()
            if ":" in line
        ] == ["lo"]
        # The same probe gets through when the operator turns the network on.
        opened = await _run(_tool(tmp_path, network=True), probe)
        assert _output(opened)["stdout"] == "connected\n"

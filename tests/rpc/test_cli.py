"""The `tandem` command, run as the installed executable against both services.

Every command runs as a subprocess awaited without blocking the event loop, which the
in-process servers share.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.pair import Stack
from tests.support.turns import bundle

# The console script installed next to this interpreter.
TANDEM = Path(sys.executable).parent / "tandem"
REPO = Path(__file__).resolve().parents[2]
ACME = REPO / "tests" / "fixtures" / "packages" / "acme"

NOTES = textwrap.dedent(
    """\
    bundle:
      name: notes
      version: 1.0.0
    session:
      orchestrator: loop-streaming
      context: context-simple
    providers:
      - module: provider-echo
        config:
          reply: hello from echo
    """
)
# tools[0] has no module: a located violation on line 5.
BROKEN_TOOL = "tools:\n  - config: {}\nproviders:"
BROKEN = "bundle:\n  name: broken\n  version: 1.0.0\ntools:\n  - config: {}\n"


async def tandem(
    stack: Stack | None, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Runs `tandem args…`; its exit code, stdout and stderr."""
    environment = {
        **os.environ,
        "COLUMNS": "200",
        **(env or {}),
    }
    if stack is not None:
        environment["TANDEM_TARGET"] = stack.config_app.server.address
        environment["TANDEM_SESSION_TARGET"] = stack.session_app.server.address
    # The console script as installed, run as a user runs it.
    process = await asyncio.create_subprocess_exec(
        str(TANDEM),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        cwd=REPO,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def ok(stack: Stack, *args: str, env: dict[str, str] | None = None) -> str:
    """stdout of a command that must succeed."""
    code, stdout, stderr = await tandem(stack, *args, env=env)
    assert code == 0, f"tandem {' '.join(args)} exited {code}:\n{stdout}\n{stderr}"
    return stdout


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


async def test_import_a_folder_and_a_git_repository(stack: Stack, tmp_path: Path) -> None:
    imported = json.loads(await ok(stack, "import", str(ACME), "--output", "json"))
    assert imported["import"]["namespace"] == "acme"
    assert imported["import"]["created"] == len(imported["import"]["configs"]) > 1
    names = {c["name"] for c in imported["import"]["configs"]}
    assert "acme:agents/reviewer" in names

    checked = json.loads(await ok(stack, "import", str(ACME), "--validate-only", "-o", "json"))
    assert checked["import"]["unchanged"] == imported["import"]["created"]
    again = await ok(stack, "import", str(ACME))
    assert "UNCHANGED" in again
    assert "acme" in again

    repository = tmp_path / "kit"
    (repository / "src").mkdir(parents=True)
    (repository / "bundle.md").write_text(bundle({"reply": "kit"}).replace("turns", "kit"))
    (repository / "src" / "tool.py").write_text("print('not part of a package')\n")
    _git(repository, "init", "--quiet", "--initial-branch=main")
    _git(repository, "add", ".")
    _git(repository, "commit", "--quiet", "-m", "kit")
    code, stdout, stderr = await tandem(stack, "import", f"git+file://{repository}@main")
    assert code == 0, stderr
    assert "kit" in stdout
    assert "left out: src/tool.py (not part of a bundle package)" in stderr
    stored = json.loads(await ok(stack, "get", "kit", "-o", "json"))
    assert stored["sourceUri"] == f"git+file://{repository}@main"


async def test_apply_then_edit_through_a_conflict(stack: Stack, tmp_path: Path) -> None:
    document = tmp_path / "notes.yaml"
    document.write_text(NOTES)
    assert "created notes" in await ok(stack, "apply", "-f", str(document))
    assert "unchanged notes" in await ok(stack, "apply", "-f", str(document))

    document.write_text(NOTES.replace("version: 1.0.0", "version: 1.1.0"))
    dry = await ok(stack, "apply", "-f", str(document), "--dry-run")
    assert "-  version: 1.0.0" in dry
    assert "+  version: 1.1.0" in dry
    listed = json.loads(await ok(stack, "get", "notes", "-o", "json"))
    assert listed["revision"] == 1  # the dry run wrote nothing

    # On its first run the editor changes the config behind the CLI's back (another
    # `tandem apply`), then edits the file; the CLI must reopen it on the user's text.
    interloper = tmp_path / "interloper.yaml"
    interloper.write_text(NOTES.replace("version: 1.0.0", "version: 9.9.9"))
    runs = tmp_path / "runs"
    editor = tmp_path / "editor.py"
    editor.write_text(
        textwrap.dedent(
            f"""\
            import os, subprocess, sys
            from pathlib import Path
            runs = Path({str(runs)!r})
            count = int(runs.read_text()) if runs.exists() else 0
            runs.write_text(str(count + 1))
            path = Path(sys.argv[-1])
            if count == 0:
                subprocess.run(
                    [{str(TANDEM)!r}, "apply", "-f", {str(interloper)!r}],
                    check=True, capture_output=True,
                )
                path.write_text(path.read_text().replace("hello from echo", "edited reply"))
            """
        )
    )
    code, stdout, stderr = await tandem(
        stack, "edit", "notes", env={"EDITOR": f"{sys.executable} {editor}", "VISUAL": ""}
    )
    assert code == 0, stderr
    assert "ABORTED ETAG_MISMATCH" in stderr
    assert "reopening your text" in stderr
    assert runs.read_text() == "2"
    assert "updated notes" in stdout
    assert "revision 3" in stdout
    final = json.loads(await ok(stack, "get", "notes", "-o", "json"))
    # The user's text won over the interloper's revision 2.
    assert final["yamlContent"] == NOTES.replace("hello from echo", "edited reply")

    listed, diff = await asyncio.gather(
        ok(stack, "revisions", "notes", "-o", "json"), ok(stack, "diff", "notes", "1", "2")
    )
    assert [r["revision"] for r in json.loads(listed)["revisions"]] == [3, 2, 1]
    assert "+  version: 9.9.9" in diff
    rolled = await ok(stack, "rollback", "notes", "1")
    assert "revision 4 equals revision 1" in rolled
    assert json.loads(await ok(stack, "get", "notes", "-o", "json"))["yamlContent"] == NOTES

    # An editor that leaves the file alone writes nothing.
    code, _, stderr = await tandem(stack, "edit", "notes", env={"EDITOR": "true", "VISUAL": ""})
    assert code == 0
    assert "no changes" in stderr
    assert json.loads(await ok(stack, "get", "notes", "-o", "json"))["revision"] == 4

    # A document the server refuses is shown located, and the editor reopens on it.
    fixer = tmp_path / "fixer.py"
    fixes = tmp_path / "fixes"
    fixer.write_text(
        textwrap.dedent(
            f"""\
            import sys
            from pathlib import Path
            fixes = Path({str(fixes)!r})
            first = not fixes.exists()
            fixes.write_text("ran")
            path = Path(sys.argv[-1])
            if first:  # a tool without its module, on line 8
                path.write_text(path.read_text().replace("providers:", {BROKEN_TOOL!r}))
            else:
                path.write_text({NOTES!r}.replace("1.0.0", "2.0.0"))
            """
        )
    )
    code, stdout, stderr = await tandem(
        stack, "edit", "notes", env={"EDITOR": f"{sys.executable} {fixer}", "VISUAL": ""}
    )
    assert code == 0, stderr
    assert "error: INVALID_ARGUMENT INVALID_BUNDLE" in stderr
    assert "notes.yaml:8:" in stderr
    assert "    - config: {}" in stderr
    assert "revision 5" in stdout
    stored = YAML(typ="safe").load(await ok(stack, "get", "notes", "-o", "yaml"))
    assert stored["yamlContent"] == NOTES.replace("1.0.0", "2.0.0")


async def test_validate_renders_violations_against_the_source(stack: Stack, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    code, _, stderr = await tandem(stack, "validate", str(broken))
    assert code == 3
    lines = stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{broken}:5:"))
    assert ": error: " in lines[at]
    assert "tools[0].module" in lines[at]
    assert lines[at + 1] == "    - config: {}"
    column = int(lines[at].split(":")[2])
    assert lines[at + 2] == "  " + " " * (column - 1) + "^"

    valid = tmp_path / "notes.yaml"
    valid.write_text(NOTES)
    assert "valid (notes)" in await ok(stack, "validate", str(valid))
    checked = json.loads(await ok(stack, "validate", str(valid), "-o", "json"))
    assert checked["valid"] is True
    assert checked["summary"]["providers"] == ["provider-echo"]


async def test_chat_once_prints_the_plain_reply_in_a_pipe(stack: Stack, tmp_path: Path) -> None:
    document = tmp_path / "echo.yaml"
    document.write_text(bundle({"reply": "hello from echo"}).replace('"turns"', '"echo"'))
    await ok(stack, "apply", "-f", str(document), "--name", "echo")
    code, stdout, stderr = await tandem(stack, "chat", "echo", "--once", "hi")
    assert code == 0, stderr
    assert stdout == "hello from echo\n"
    prepared = json.loads(await ok(stack, "prepare", "echo", "-o", "json"))
    assert prepared["valid"] is True
    assert prepared["defaultProvider"] == "provider-echo"

    sessions = json.loads(await ok(stack, "sessions", "list", "-o", "json"))["sessions"]
    assert len(sessions) == 1
    assert sessions[0]["status"] == "ACTIVE"
    session_id = sessions[0]["sessionId"]
    transcript, tail = await asyncio.gather(
        ok(stack, "sessions", "messages", session_id, "-o", "json"),
        ok(stack, "sessions", "tail", session_id, "--no-follow", "-o", "json"),
    )
    assert [(m["role"], m["content"]) for m in json.loads(transcript)["messages"]] == [
        ("USER", "hi"),
        ("ASSISTANT", "hello from echo"),
    ]
    kinds = [json.loads(line)["kind"] for line in tail.splitlines()]
    assert kinds[0] == "turn_started"
    assert kinds[-1] == "turn_completed"

    assert "TERMINATED" in await ok(stack, "sessions", "terminate", session_id)
    # A second terminate is an illegal move: FAILED_PRECONDITION.
    code, _, stderr = await tandem(stack, "sessions", "terminate", session_id)
    assert code == 6, stderr
    assert "error: FAILED_PRECONDITION" in stderr


async def test_chat_once_exits_130_when_its_turn_is_cancelled(stack: Stack, tmp_path: Path) -> None:
    document = tmp_path / "slow.yaml"
    slow = bundle({"reply": "word " * 200, "delay_ms": 50}).replace('"turns"', '"slow"')
    document.write_text(slow)
    await ok(stack, "apply", "-f", str(document), "--name", "slow")
    chatting = asyncio.create_task(tandem(stack, "chat", "slow", "--once", "hi"))
    # Someone else stops the turn once it has streamed some of its reply.
    async with asyncio.timeout(30):
        while True:
            listed = await stack.sessions.ListSessions(session_service_pb2.ListSessionsRequest())
            running = [s for s in listed.sessions if s.active_turn_id and s.last_sequence > 2]
            if running:
                break
            await asyncio.sleep(0.1)
    await stack.sessions.CancelTurn(
        session_service_pb2.CancelTurnRequest(session_id=running[0].session_id)
    )
    code, stdout, stderr = await chatting
    assert code == 130, stderr
    assert "error: the turn was cancelled" in stderr
    # What had streamed is still printed: the reply was cut, not lost.
    assert stdout.startswith("word")


async def test_each_error_class_has_its_exit_code(stack: Stack, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    notes = tmp_path / "notes.yaml"
    notes.write_text(NOTES)
    # Independent commands, side by side.
    missing, invalid, unavailable, usage, imported = await asyncio.gather(
        tandem(stack, "get", "nobody"),
        tandem(stack, "apply", "-f", str(broken), "--name", "broken"),
        tandem(None, "list", env={"TANDEM_TARGET": "127.0.0.1:9"}),
        tandem(stack, "get"),
        tandem(stack, "import", str(ACME)),
    )
    code, stdout, stderr = missing
    assert (code, stdout) == (4, "")
    assert stderr.startswith("error: NOT_FOUND CONFIG_NOT_FOUND")

    code, _, stderr = invalid
    assert code == 3
    assert "error: INVALID_ARGUMENT INVALID_BUNDLE" in stderr
    assert f"{broken}:5:" in stderr
    assert "    - config: {}" in stderr

    code, _, stderr = unavailable
    assert code == 9
    assert stderr.startswith("error: UNAVAILABLE")

    code, _, stderr = usage
    assert code == 2
    assert "Missing argument" in stderr

    # A config made by hand inside an imported package's namespace is refused.
    assert imported[0] == 0, imported[2]
    code, _, stderr = await tandem(stack, "apply", "-f", str(notes), "--name", "acme:notes/x")
    assert code == 5, stderr
    assert "error: ALREADY_EXISTS NAMESPACE_IMPORTED" in stderr


GATED = {
    "bundle": {"name": "gated"},
    "session": {"orchestrator": "loop-streaming", "context": "context-simple"},
    "providers": [
        {
            "module": "provider-echo",
            "config": {
                "script": [
                    {
                        "thinking": "A file first.",
                        "reply": "Writing **notes.txt** now.",
                        "tool_calls": [
                            {
                                "name": "write_file",
                                "arguments": {"path": "notes.txt", "content": "hi"},
                            }
                        ],
                    },
                    {
                        "reply": "Saved; now I read it back.",
                        "tool_calls": [{"name": "read_file", "arguments": {"path": "notes.txt"}}],
                    },
                    {"stall": True},
                ]
            },
        }
    ],
    "tools": [{"module": "tool-filesystem"}],
    "hooks": [{"module": "hooks-approval", "config": {"tools": ["write_file"]}}],
}


class Terminal:
    """A private tmux server running one command in a real terminal."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    async def tmux(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "tmux",
            "-L",
            self.socket,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        return stdout.decode()

    async def screen(self) -> str:
        return await self.tmux("capture-pane", "-p", "-J", "-t", "cli")

    async def until(self, text: str) -> str:
        """The screen once it shows text; fails showing the screen if it never does."""
        shown = ""
        for _ in range(300):
            shown = await self.screen()
            if text in shown:
                return shown
            await asyncio.sleep(0.1)
        pytest.fail(f"the terminal never showed {text!r}; it shows:\n{shown}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux drives the real terminal")
async def test_chat_in_a_terminal_streams_asks_and_cancels(stack: Stack, tmp_path: Path) -> None:
    document = tmp_path / "gated.json"
    document.write_text(json.dumps(GATED))
    await ok(stack, "apply", "-f", str(document))
    terminal = Terminal(f"tandem-cli-{os.getpid()}-{tmp_path.name}")
    command = shlex.join(
        [
            "env",
            f"TANDEM_TARGET={stack.config_app.server.address}",
            f"TANDEM_SESSION_TARGET={stack.session_app.server.address}",
            str(TANDEM),
            "chat",
            "gated",
        ]
    )
    await terminal.tmux(
        "new-session", "-d", "-s", "cli", "-x", "120", "-y", "50",
        f"{command}; echo EXIT=$?; sleep 60",
    )  # fmt: skip
    try:
        await terminal.until("you> ")
        await terminal.tmux("send-keys", "-t", "cli", "please write it", "Enter")
        asked = await terminal.until("[y/n]")
        assert "A file first." in asked  # thinking, shown dimmed
        assert "Writing notes.txt now." in asked  # streamed, then rendered as markdown
        assert '→ write_file({"content": "hi", "path": "notes.txt"})' in asked
        await terminal.tmux("send-keys", "-t", "cli", "y", "Enter")
        resumed = await terminal.until('→ read_file({"path": "notes.txt"})')
        assert "← Wrote 2 bytes to notes.txt." in resumed
        assert "Saved; now I read it back." in resumed
        # The model now stalls: Ctrl-C cancels the turn and the prompt comes back.
        await terminal.tmux("send-keys", "-t", "cli", "C-c")
        cancelled = await terminal.until("turn cancelled")
        assert cancelled.rstrip().endswith("you>")
        await terminal.tmux("send-keys", "-t", "cli", "C-c")
        await terminal.until("EXIT=130")
    finally:
        await terminal.tmux("kill-server")
    sessions = json.loads(await ok(stack, "sessions", "list", "-o", "json"))["sessions"]
    messages = json.loads(
        await ok(stack, "sessions", "messages", sessions[0]["sessionId"], "-o", "json")
    )["messages"]
    assert messages[0]["content"] == "please write it"
    assert [m["role"] for m in messages].count("TOOL") == 2

"""Runs shell commands for the model, each inside a sandbox that ends with the command.

The `bash` tool keeps Amplifier's name, arguments (`command`, `timeout`, `run_in_background`)
and result shape (`stdout`, `stderr`, `returncode`, as JSON) so prompts written for it work.

The operator decides everything that matters (`sandbox.policy.bash`, TANDEM_TOOLS_BASH_*): the
module is off unless `enabled`, and a bundle naming it is refused when it is prepared. Bundle
config keys (see CONFIG_KEYS) can only lower the operator's ceilings, never raise them:

- `timeout`: the most seconds a command may run (default and ceiling: the operator's
  `timeout_seconds`); the model's `timeout` argument is held to it too.
- `max_output_bytes`: the most stdout+stderr returned (ceiling: the operator's).

Each command runs as `/bin/bash -c` (`/bin/sh` without bash), in a new session, with stdin
from /dev/null and an environment built from nothing (PATH, HOME and PWD = the workspace,
LANG, TERM): no server variable, key or token reaches it. Around it:

- New user, mount, PID, IPC and UTS namespaces (util-linux `unshare`), plus a network
  namespace with only loopback unless the operator allows `network`. The command is PID 1 of
  its namespace: when it exits or is killed, the kernel kills every process it left behind.
- A fresh root filesystem (`pivot_root`): /usr, /etc, /opt (and /bin, /lib… or their links)
  bound read-only, /etc/shadow and /etc/gshadow masked, a minimal /dev, a read-only /proc of
  the namespace only (the server's processes and their environments are invisible), a private
  /tmp tmpfs of at most `max_file_bytes`, and the session's workspace bound read-write at its
  own path. Nothing else of the host is there: other workspaces, the databases and key files
  cannot be read or written. The command runs with every capability dropped and
  no_new_privs, so it cannot remount any of it writable.
- rlimits (util-linux `prlimit`): CPU seconds, address space, processes, file size, no core.
- A pids cgroup holding `max_processes` where the server can make one (cgroup v1 `pids`
  hierarchy, or v2 with `pids` delegated): RLIMIT_NPROC does not bind a command whose
  namespace root is the host's root, so a root server needs the cgroup to stop a fork bomb.
- The timeout, or the turn being cancelled, kills the namespace's PID 1 (and with it every
  process in the namespace), the launcher's process group and whatever is left in the
  cgroup; the result says it timed out and carries the output so far.
- stdout and stderr are read as they come; beyond `max_output_bytes` the middle is dropped
  (the result says how many bytes) while reading goes on, so a flood cannot fill memory.

Fallback: if the sandbox cannot be built (no `unshare`/`mount`/`pivot_root`/`prlimit`/
`setpriv`, user namespaces disabled, or root without a usable pids cgroup), every call is a
tool error saying so and no command runs: a command outside the sandbox could write where the
server writes and read its environment, whatever the network setting.

Not enforced: disk use inside the workspace beyond the per-file limit; with `network` on,
the host's network (and its abstract Unix sockets) is reachable; the operator's extra roots
(TANDEM_TOOL_ALLOWED_ROOTS) are not visible to commands. `run_in_background` is refused: a
process cannot outlive the sandbox of its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from session_service.tool_policy import BashPolicy
from session_service.turns.protocols import ToolResult, ToolSpec
from session_service.workspace import Sandbox

_log = logging.getLogger(__name__)

OFF_MESSAGE = (
    "tool-bash is turned off on this server; the operator enables it with"
    " TANDEM_TOOLS_BASH_ENABLED=true"
)
# The key a refusal of the whole module is reported under (the preparer prefixes
# `tools[i].config.`, and an empty key would leave a dangling dot).
MODULE_KEY = "module"

# Where the sandbox tools are looked for, and the PATH commands get.
_TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COMMAND_PATH = "/usr/local/bin:/usr/bin:/bin"
_REQUIRED = ("unshare", "mount", "umount", "pivot_root", "prlimit", "setpriv")

# How long cleanup waits for killed processes to be gone before it gives up on them.
_REAP_SECONDS = 5.0

# Runs as PID 1 of the new namespaces, as the namespace's root (still with its capabilities),
# builds the new root and execs the command without capabilities. Arguments: workspace, /tmp
# size, whether to raise loopback, the four limits, the shell, the command. stdin is the
# write end of a pipe: one byte on it tells the server the sandbox was built. POSIX sh only.
_SETUP = r"""
set -eu
cmd_path=$PATH
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ws=$1 tmp_size=$2 loopback=$3 cpu=$4 mem=$5 nproc=$6 fsize=$7 shell=$8 cmd=$9
# A handle on the workspace before the new root is mounted over its path.
exec 3<"$ws"
r=$ws
mount -t tmpfs -o size=1m,mode=755 tandem-root "$r"
for d in usr etc opt; do
  if [ -d "/$d" ] && [ ! -L "/$d" ]; then mkdir "$r/$d"; mount --bind -o ro "/$d" "$r/$d"; fi
done
for l in bin sbin lib lib32 lib64 libx32; do
  if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$r/$l"
  elif [ -d "/$l" ]; then mkdir "$r/$l"; mount --bind -o ro "/$l" "$r/$l"; fi
done
mkdir "$r/dev"
mount -t tmpfs -o size=64k,mode=755 tandem-dev "$r/dev"
for n in null zero full random urandom tty; do
  touch "$r/dev/$n"; mount --bind "/dev/$n" "$r/dev/$n"
done
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mkdir "$r/proc"
mount -t proc -o ro,nosuid,nodev,noexec proc "$r/proc"
mkdir "$r/tmp"
mount -t tmpfs -o "size=$tmp_size,mode=1777,nosuid,nodev" tandem-tmp "$r/tmp"
mkdir -p "$r$ws"
mount --no-canonicalize --bind /proc/self/fd/3 "$r$ws"
exec 3<&-
for s in shadow gshadow; do
  if [ -e "$r/etc/$s" ]; then mount --bind "$r/dev/null" "$r/etc/$s"; fi
done
mkdir "$r/.old"
cd "$r"
pivot_root . .old
umount -l /.old
rmdir /.old
mount -o remount,ro,bind /
if [ "$loopback" = 1 ] && command -v ip >/dev/null 2>&1; then
  ip link set lo up >/dev/null 2>&1 || true
fi
cd "$ws"
PATH=$cmd_path
printf ok >&0
exec 0</dev/null
exec prlimit --cpu="$cpu" --as="$mem" --nproc="$nproc" --fsize="$fsize" --core=0 -- \
  setpriv --no-new-privs --inh-caps=-all --ambient-caps=-all --bounding-set=-all -- \
  "$shell" -c "$cmd"
"""

# Run before the sandbox when a cgroup is used: the launcher moves itself in, so every process
# it and the command start is counted from the first.
_JOIN_CGROUP = 'echo $$ > "$1" && shift && exec "$@"'


class _Refused(Exception):
    """A call that ends in an error result; the message is safe to show the model."""


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _config_problems(config: Any) -> list[tuple[str, str]]:
    if not isinstance(config, Mapping):
        return [(MODULE_KEY, "the config must be a mapping")]
    problems: list[tuple[str, str]] = []
    timeout = config.get("timeout")
    if timeout is not None and not _positive_number(timeout):
        problems.append(("timeout", "must be a positive number of seconds"))
    cap = config.get("max_output_bytes")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        problems.append(("max_output_bytes", "must be a positive integer"))
    return problems


@dataclass(frozen=True)
class _Tools:
    """Absolute paths of what the sandbox needs, or why it cannot be built here."""

    paths: Mapping[str, str]
    shell: str
    missing: str


def _find_tools() -> _Tools:
    paths: dict[str, str] = {}
    missing = []
    for name in _REQUIRED:
        found = shutil.which(name, path=_TOOL_PATH)
        if found is None:
            missing.append(name)
        else:
            paths[name] = found
    shell = next(
        (s for s in ("/bin/bash", "/usr/bin/bash", "/bin/sh") if os.access(s, os.X_OK)), ""
    )
    if not shell:
        missing.append("bash or sh")
    return _Tools(paths, shell, ", ".join(missing))


class _Cgroup:
    """A pids cgroup of one command; None from create() where the server cannot make one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, max_processes: int) -> _Cgroup | None:
        parent = _pids_cgroup_parent()
        if parent is None:
            return None
        path = parent / f"tandem-bash-{uuid.uuid4().hex}"
        try:
            path.mkdir()
        except OSError:
            return None
        group = cls(path)
        try:
            (path / "pids.max").write_text(str(max_processes))
        except OSError:
            group.remove()
            return None
        return group

    @property
    def procs(self) -> Path:
        """The file a process writes its pid to, to join."""
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        """The processes still in the group."""
        try:
            return [int(line) for line in self.procs.read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> None:
        """SIGKILL for everything in the group (cgroup.kill where the kernel has it)."""
        try:
            (self.path / "cgroup.kill").write_text("1")
            return
        except OSError:
            pass
        # The pids limit bounds how many can appear while this loops.
        for _ in range(20):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                _signal(pid)

    async def empty(self) -> bool:
        """Waits (bounded) until the group has no processes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REAP_SECONDS
        while self.pids():
            if loop.time() > deadline:
                return False
            self.kill()
            await asyncio.sleep(0.02)
        return True

    def remove(self) -> None:
        """Deletes the group; one still in use is logged and left for the operator."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            _log.warning("tool-bash: could not remove a cgroup: %s", type(exc).__name__)


def _pids_cgroup_parent() -> Path | None:
    """The server's own cgroup in a hierarchy with the pids controller, if it can hold more."""
    try:
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    # (mount root, mount point) of the v1 pids hierarchy and of the v2 one.
    v1: tuple[str, str] | None = None
    v2: tuple[str, str] | None = None
    for line in mountinfo:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup" and "pids" in tail[2].split(","):
            v1 = (fields[3], fields[4])
        elif tail[0] == "cgroup2":
            v2 = (fields[3], fields[4])
    for line in memberships:
        hierarchy, _, rest = line.partition(":")
        controllers, _, own = rest.partition(":")
        if v1 is not None and "pids" in controllers.split(","):
            return _under(v1, own)
        if v2 is not None and hierarchy == "0" and not controllers:
            base = _under(v2, own)
            if base is None:
                continue
            try:
                delegated = (base / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "pids" in delegated:
                return base
    return None


def _under(mount: tuple[str, str], own: str) -> Path | None:
    """Where the cgroup own is, in a hierarchy mounted from root at point."""
    root, point = mount
    if root != "/" and not (own == root or own.startswith(root + "/")):
        return None
    relative = own[len(root) :] if root != "/" else own
    return Path(point + "/" + relative.lstrip("/"))


def _signal(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    """Processes whose parent is pid (the launcher's child is the namespace's PID 1)."""
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold anything; the ppid follows it.
        fields = stat[stat.rfind(")") + 1 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(name))
    return found


class _Capture:
    """One output stream: the first and last bytes up to a limit, and how many there were."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit - limit // 2
        self.tail_limit = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        """Keeps what fits of chunk; the rest is counted and dropped."""
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_limit:
            self.tail += chunk
            excess = len(self.tail) - self.tail_limit
            if excess > 0:
                del self.tail[:excess]

    @property
    def kept(self) -> int:
        """How many bytes are held."""
        return len(self.head) + len(self.tail)

    def render(self, budget: int, limit: int) -> str:
        """The text to show in at most budget bytes (plus a note of what was dropped)."""
        head, tail = bytes(self.head), bytes(self.tail)
        if len(head) + len(tail) > budget:
            tail = tail[len(tail) - budget // 2 :] if budget // 2 else b""
            head = head[: budget - len(tail)]
        dropped = self.total - len(head) - len(tail)
        text = head.decode("utf-8", errors="replace")
        if dropped:
            text += (
                f"\n[...{dropped:,} bytes dropped: the output was {self.total:,} bytes,"
                f" over the {limit:,}-byte limit; redirect it to a file to read it all...]\n"
            )
        return text + tail.decode("utf-8", errors="replace")


async def _drain(stream: asyncio.StreamReader | None, capture: _Capture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        capture.add(chunk)


class BashTool:
    """The `bash` tool: one shell command per call, inside a per-call sandbox."""

    CONFIG_KEYS: frozenset[str] = frozenset({"timeout", "max_output_bytes"})
    REACH_VIOLATION = "TOOL_NOT_ENABLED"

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        policy = sandbox.policy.bash
        # Also refused when the bundle is prepared; this holds if anything skips that.
        if not policy.enabled:
            raise ValueError(OFF_MESSAGE)
        problems = _config_problems(config)
        if problems:
            raise ValueError("; ".join(f"{key} {message}" for key, message in problems))
        self._workspace = sandbox.workspace
        self._policy: BashPolicy = policy
        ceiling = float(policy.timeout_seconds)
        self.timeout_seconds = min(float(config.get("timeout") or ceiling), ceiling)
        limit = policy.max_output_bytes
        self.max_output_bytes = min(int(config.get("max_output_bytes") or limit), limit)
        self._tools = _find_tools()

    @staticmethod
    def check_config(config: Mapping[str, Any], sandbox: Sandbox) -> list[tuple[str, str]]:
        """Problems found when the bundle is prepared: the module off, or a bad setting."""
        if not sandbox.policy.bash.enabled:
            return [(MODULE_KEY, OFF_MESSAGE)]
        return _config_problems(config)

    def specs(self) -> Sequence[ToolSpec]:
        """The bash tool, with Amplifier's arguments and this server's limits."""
        limit = _seconds(self.timeout_seconds)
        network = (
            "Commands may use the network."
            if self._policy.network
            else "Commands have no network access."
        )
        description = (
            "Low-level shell command execution. This is a fallback primitive - before using"
            " bash directly, consider whether specialized capabilities exist for your task."
            "\n\nWHEN TO USE BASH:\n"
            "- Build and test commands (pytest, npm test, cargo build, make)\n"
            "- Version control operations (git status, git diff, git commit)\n"
            "- System utilities when no specialized option exists\n"
            "\nSANDBOX:\n"
            "- The working directory is the session workspace; it is the only place you can"
            " write besides a private /tmp that is discarded after each command.\n"
            f"- {network}\n"
            "- Every process a command starts ends with it; nothing keeps running between"
            " calls.\n"
            "\nOUTPUT LIMITS:\n"
            f"- stdout and stderr together are cut to {self.max_output_bytes:,} bytes; the"
            " middle is dropped and the result says how much.\n"
            "- For large output, redirect to a file (command > output.txt) and read"
            " portions of it.\n"
            "\nCOMMAND GUIDELINES:\n"
            '- Quote paths containing spaces: cd "/path/with spaces"\n'
            "- Chain dependent commands with && (mkdir foo && cd foo)\n"
            f"- Commands time out after {limit} seconds; `timeout` can only shorten that.\n"
            "- `run_in_background` is not supported here.\n"
            "- Interactive commands (-i flags, editors requiring input) are not supported;"
            " stdin is empty."
        )
        return (
            ToolSpec(
                "bash",
                description,
                {
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "description": "Bash command to execute"},
                        "timeout": {
                            "type": "integer",
                            "description": (
                                f"Command timeout in seconds (default and maximum: {limit})."
                            ),
                        },
                        "run_in_background": {
                            "type": "boolean",
                            "description": (
                                "Run command in background, returning immediately with PID."
                                " Not supported on this server: leave it false."
                            ),
                            "default": False,
                        },
                    },
                    "required": ["command"],
                },
            ),
        )

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Runs one command; every failure is returned as an error result, never raised."""
        try:
            if name != "bash":
                raise _Refused(f"Unknown tool {name!r}; this module offers bash.")
            if not isinstance(arguments, Mapping):
                raise _Refused("The arguments must be a JSON object.")
            command = arguments.get("command")
            if not isinstance(command, str) or not command.strip():
                raise _Refused("Command is required: pass `command` as a non-empty string.")
            if "\x00" in command:
                raise _Refused("The command must not contain NUL characters.")
            if arguments.get("run_in_background"):
                raise _Refused(
                    "run_in_background is not supported on this server: every command runs in"
                    " a sandbox that ends with the call, so no process can outlive it. Run the"
                    f" command in the foreground (it may take up to"
                    f" {_seconds(self.timeout_seconds)} seconds)."
                )
            timeout = self.timeout_seconds
            asked = arguments.get("timeout")
            if asked is not None:
                if not _positive_number(asked):
                    raise _Refused("timeout must be a positive number of seconds.")
                timeout = min(float(asked), timeout)
            return await self._run(command, timeout)
        except _Refused as exc:
            return ToolResult(str(exc), is_error=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.exception("tool-bash: a command could not be run")
            return ToolResult(f"bash failed: {type(exc).__name__}.", is_error=True)

    async def _run(self, command: str, seconds: float) -> ToolResult:
        tools = self._tools
        if tools.missing:
            raise _Refused(
                "This server cannot sandbox shell commands (missing: "
                + tools.missing
                + "), so tool-bash runs none; the operator must install util-linux."
            )
        policy = self._policy
        cgroup = _Cgroup.create(policy.max_processes)
        try:
            if cgroup is None and os.geteuid() == 0:
                raise _Refused(
                    "This server runs as root without a pids cgroup it can use, so it cannot"
                    " limit how many processes a command starts; tool-bash runs none. The"
                    " operator must run the service as another user or delegate a pids cgroup."
                )
            return await self._spawn(command, seconds, cgroup)
        finally:
            if cgroup is not None:
                await cgroup.empty()
                cgroup.remove()

    def _argv(self, command: str, cgroup: _Cgroup | None) -> list[str]:
        tools, policy = self._tools, self._policy
        namespaces = ["--user", "--map-root-user", "--mount", "--pid", "--ipc", "--uts"]
        if not policy.network:
            namespaces.append("--net")
        argv = [
            tools.paths["unshare"],
            *namespaces,
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            _SETUP,
            "tandem-bash",
            str(self._workspace),
            str(policy.max_file_bytes),
            "0" if policy.network else "1",
            str(policy.cpu_seconds),
            str(policy.memory_bytes),
            str(policy.max_processes),
            str(policy.max_file_bytes),
            tools.shell,
            command,
        ]
        if cgroup is not None:
            argv = ["/bin/sh", "-c", _JOIN_CGROUP, "tandem-bash", str(cgroup.procs), *argv]
        return argv

    def _environment(self) -> dict[str, str]:
        # Built from nothing: the server's environment holds its keys and settings.
        workspace = str(self._workspace)
        return {
            "PATH": COMMAND_PATH,
            "HOME": workspace,
            "PWD": workspace,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
        }

    async def _spawn(self, command: str, seconds: float, cgroup: _Cgroup | None) -> ToolResult:
        ready_read, ready_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv(command, cgroup),
                stdin=ready_write,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self._workspace,
                env=self._environment(),
                start_new_session=True,
            )
        except BaseException:
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)
        stdout = _Capture(self.max_output_bytes)
        stderr = _Capture(self.max_output_bytes)
        readers = asyncio.gather(_drain(process.stdout, stdout), _drain(process.stderr, stderr))
        timed_out = False
        try:
            try:
                async with asyncio.timeout(seconds):
                    await asyncio.shield(readers)
                    await process.wait()
            except TimeoutError:
                timed_out = True
        finally:
            try:
                # Also on cancellation: nothing the command started may outlive the call.
                await self._stop(process, readers, cgroup)
            finally:
                ready = _read_ready(ready_read)
        if not ready:
            # The sandbox was not built; what the setup printed is for the operator only.
            _log.warning(
                "tool-bash: the sandbox could not be built: %s",
                bytes(stderr.head).decode("utf-8", errors="replace").strip()[:2000],
            )
            raise _Refused(
                "This server cannot sandbox shell commands (user, mount and PID namespaces are"
                " unavailable), so tool-bash runs none; the operator's logs say why."
            )
        output = self._render(stdout, stderr, None if timed_out else process.returncode)
        if timed_out:
            return ToolResult(
                f"Command timed out after {_seconds(seconds)} seconds; it and every process"
                f" it started were killed. Output so far:\n{output}",
                is_error=True,
            )
        return ToolResult(output, is_error=process.returncode != 0)

    async def _stop(
        self,
        process: asyncio.subprocess.Process,
        readers: asyncio.Future[Any],
        cgroup: _Cgroup | None,
    ) -> None:
        """Kills whatever of the command still runs, and waits for the pipes and the launcher."""
        if process.returncode is None:
            # The namespace's PID 1 first: its death takes every process in the namespace.
            for pid in _children(process.pid):
                _signal(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if cgroup is not None:
            cgroup.kill()
        try:
            async with asyncio.timeout(_REAP_SECONDS):
                await asyncio.shield(readers)
                await process.wait()
        except TimeoutError:
            _log.warning("tool-bash: a command's processes outlived their sandbox")
            transport = getattr(process, "_transport", None)
            if transport is not None:
                transport.close()
            readers.cancel()

    def _render(self, stdout: _Capture, stderr: _Capture, returncode: int | None) -> str:
        limit = self.max_output_bytes
        budgets = {id(stdout): stdout.kept, id(stderr): stderr.kept}
        if stdout.kept + stderr.kept > limit:
            small, large = sorted((stdout, stderr), key=lambda c: c.kept)
            budgets[id(small)] = min(small.kept, limit // 2)
            budgets[id(large)] = limit - budgets[id(small)]
        result: dict[str, Any] = {
            "stdout": stdout.render(budgets[id(stdout)], limit),
            "stderr": stderr.render(budgets[id(stderr)], limit),
        }
        if returncode is not None:
            # Killed by a signal: the shell's convention, 128 + the signal's number.
            result["returncode"] = 128 - returncode if returncode < 0 else returncode
        truncated = [
            (stream, capture)
            for stream, capture in (("stdout", stdout), ("stderr", stderr))
            if capture.total > min(capture.kept, budgets[id(capture)])
        ]
        if truncated:
            result["truncated"] = True
            for stream, capture in truncated:
                result[f"{stream}_total_bytes"] = capture.total
        return json.dumps(result, ensure_ascii=False)


def _read_ready(fd: int) -> bool:
    """Whether the setup wrote its byte (the pipe's writers are all gone by now)."""
    try:
        os.set_blocking(fd, False)
        return bool(os.read(fd, 16))
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"

"""A PostgreSQL server of the test's own, so that it can restart it and kill it.

`initdb` and `pg_ctl` (from /usr/lib/postgresql/*/bin, or PATH) set up a throwaway cluster in
a temporary folder and run it on a free port of 127.0.0.1 with trust authentication. initdb
refuses to run as root, as CI and the development machines do, so there the binaries run as
the `postgres` user, who is given the folder.

Every method blocks; call them through `asyncio.to_thread` from a test whose event loop runs
the services, or the services stall for as long as the call takes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import psycopg
import pytest

from tests.support.databases import in_ci

SERVER_USER = "postgres"


@cache
def postgres_bindir() -> Path | None:
    """The folder that holds initdb and pg_ctl, newest version first; None if there is none."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").is_file() and Path(candidate, "pg_ctl").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def require_cluster() -> Path:
    """The binaries' folder; skips the test (fails it under CI) when they are missing."""
    bindir = postgres_bindir()
    if bindir is None:
        message = "initdb and pg_ctl are not installed"
        if in_ci():
            pytest.fail(f"PostgreSQL server binaries are required in CI: {message}.")
        pytest.skip(message)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            pytest.skip(f"running as root and there is no {SERVER_USER!r} user for initdb")
    return bindir


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgCluster:
    """One throwaway PostgreSQL cluster: start, stop, restart and kill."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self._bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self._as_server: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses root; the server runs as the postgres user, who owns the folder.
            account = pwd.getpwnam(SERVER_USER)
            os.chown(root, account.pw_uid, account.pw_gid)
            self._as_server = ["runuser", "-u", SERVER_USER, "--"]

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the cluster's `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        subprocess.run(
            [*self._as_server, str(self._bindir / tool), *args],
            check=check,
            capture_output=True,
            timeout=60,
        )

    def init(self) -> None:
        """Creates the cluster (trust authentication, superuser `postgres`)."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )

    def start(self) -> None:
        """Starts the server and waits until it takes connections."""
        stale = self.postmaster_pid()
        if stale is not None and not _alive(stale):
            # Left by a killed postmaster. Where PID 1 does not reap orphans (containers),
            # its zombie still answers signal 0 and would keep the server from starting.
            (self.data / "postmaster.pid").unlink(missing_ok=True)
            (self.root / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                # No fsync: the tests crash the server, never the machine, so what is written
                # survives anyway. Commits stay synchronous: an asynchronous commit is lost
                # when the server is killed, and the services rely on commits being kept.
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """Stops the server: smart, fast (ends sessions) or immediate (no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stops the server and starts it again on the same port."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """SIGKILLs the postmaster, as a crashed host would; its backends exit by themselves."""
        pid = self.postmaster_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.02)

    def postmaster_pid(self) -> int | None:
        """The running postmaster's process id, if it runs."""
        try:
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
        except (FileNotFoundError, IndexError):
            return None
        return int(first)

    def wait_ready(self, timeout: float = 30) -> None:
        """Returns once the server answers a query."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(
                    f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                    connect_timeout=2,
                ) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def log(self) -> str:
        """The server's log so far, for failure messages."""
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(errors="replace")
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of pg_ctl's shell still answers signal 0; /proc tells it apart.
    with contextlib.suppress(OSError):
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    return False


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started throwaway cluster; stopped and removed afterwards."""
    bindir = require_cluster()
    # Not pytest's tmp_path: its parents are private to root, and the server user must
    # reach the folder.
    root = Path(tempfile.mkdtemp(prefix="tandem-pg-"))
    cluster = PgCluster(bindir, root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            cluster._run("pg_ctl", "-D", str(cluster.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)

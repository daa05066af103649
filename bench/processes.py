"""Server processes for `bench.compare`: start, wait until serving, read /proc, stop.

Each server is a child process with its log in a file (so it never blocks on a full pipe and
the log can be shown when it fails). Servers bind port 0 and log the address they got, which
avoids racing another process for a port picked in advance. Stopping is synchronous, so it
also runs while the event loop is being torn down (Ctrl-C, an exception).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql
from sqlalchemy.engine import URL, make_url

_LISTENING = re.compile(r"listening on (\S+:\d+)")
_TICKS = os.sysconf("SC_CLK_TCK")
STARTUP_SECONDS = 60.0
STOP_SECONDS = 15.0


def cpu_seconds(pid: int | str) -> float:
    """User plus system CPU time the process (all its threads) has used so far."""
    # The command name in field 2 may hold spaces: split after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int | str) -> int:
    """The process's resident set size (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class ServerProcess:
    """A started server: its process, where it listens and where it logs."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        """The end of its log, to explain a failure."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "".join(text.splitlines(keepends=True)[-lines:])

    def stop(self) -> None:
        """SIGTERM, so it shuts down as in production; SIGKILL if it has not after a while."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(name: str, args: list[str], env: Mapping[str, str], log_path: Path) -> ServerProcess:
    """`python args...` with env added to ours, logging to log_path."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, *args],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(name, process, log_path)


async def wait_listening(server: ServerProcess) -> None:
    """Sets server.address from the `listening on HOST:PORT` line of its log."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        match = _LISTENING.search(server.log_path.read_text(errors="replace"))
        if match:
            server.address = match.group(1)
            return
        if server.process.poll() is not None:
            break
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{server.name} did not start:\n{server.log_tail()}")


async def wait_healthy(server: ServerProcess, service: str) -> None:
    """Waits until gRPC health reports service SERVING (the server may still be migrating)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=2
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.name} is not serving {service}:\n{server.log_tail()}")


def postgres_admin_conninfo(url: str) -> str:
    """A libpq connection string for psycopg from an SQLAlchemy-style URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_postgres(admin_url: str, name: str) -> Iterator[URL]:
    """A fresh database on admin_url's server, dropped on exit; its SQLAlchemy URL."""
    admin = postgres_admin_conninfo(admin_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    finally:
        # FORCE: a connection a killed service left behind must not keep the database alive.
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def postgres_version(admin_url: str) -> str:
    """The server's version string, e.g. `16.4 (Debian 16.4-1)`."""
    with psycopg.connect(postgres_admin_conninfo(admin_url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"

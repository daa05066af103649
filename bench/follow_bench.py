"""Following event logs: what idle followers cost, and how fast 200 followers get each event.

Starts ConfigService and SessionService as separate processes (SQLite files by default, or
the PostgreSQL database in --database / TANDEM_BENCH_DATABASE_URL), the way they are deployed,
so that SessionService's own CPU time can be read from /proc while the clients run here.

1. Idle: --idle-streams StreamEvents(follow=true) calls spread over --idle-sessions sessions,
   all caught up, nothing happening, for --idle-seconds. Reported: SessionService's CPU time
   over wall time (100 % is one core), and on PostgreSQL the database's transactions/s.
2. Fan-out: --followers StreamEvents(follow=true) calls on one session while a turn streams
   --tokens deltas, one every --delay-ms. Reported: the delay from each event's event_time
   (stamped when the turn produced it, before it is stored) to its arrival at each follower,
   p50 / p99 / max over every (follower, event) pair. Both ends read the same clock.

    .venv/bin/python -m bench.follow_bench [--database URL] [--idle-streams 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
from sqlalchemy.engine import make_url

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import (
    events_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)

_LISTENING = re.compile(r"listening on (\S+:\d+)")
_TICKS = os.sysconf("SC_CLK_TCK")
STATS_DELAY = 11.0


@dataclass
class Service:
    """A service process and the address it listens on."""

    process: asyncio.subprocess.Process
    address: str

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS


@contextlib.asynccontextmanager
async def service(module: str, env: Mapping[str, str]) -> AsyncIterator[Service]:
    """`python -m module` with env added, until it says where it listens; killed on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    seen: list[str] = []
    drain: asyncio.Task[bytes] | None = None
    try:
        while True:
            line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
            if not line:
                raise RuntimeError(f"{module} exited:\n" + "".join(seen))
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                break
        # Keep reading its log so that it never blocks on a full pipe.
        drain = asyncio.create_task(process.stderr.read())
        yield Service(process, match.group(1))
    finally:
        if process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 15)
        if process.returncode is None:
            process.kill()
            await process.wait()
        if drain is not None:
            await drain


def document(tokens: int, delay_ms: float) -> str:
    """A bundle whose echo reply is `tokens` words, one every delay_ms."""
    reply = " ".join(f"w{n}" for n in range(tokens))
    body = {
        "bundle": {"name": "follow-bench"},
        "session": {"orchestrator": "loop-streaming", "context": "context-simple"},
        "providers": [
            {"module": "provider-echo", "config": {"reply": reply, "delay_ms": delay_ms}}
        ],
    }
    return f"---\n{json.dumps(body)}\n---\nYou are a benchmark.\n"


def percentile(values: list[float], fraction: float) -> float:
    """The value below which that fraction of values lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Stubs:
    """Stubs over a few channels, so one client process does not funnel all streams into one."""

    def __init__(self, address: str, channels: int) -> None:
        self.channels = [grpc.aio.insecure_channel(address) for _ in range(channels)]
        self.stubs = [session_service_pb2_grpc.SessionServiceStub(c) for c in self.channels]

    def __getitem__(self, index: int) -> Any:
        return self.stubs[index % len(self.stubs)]

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)


async def sessions_with_one_turn(stub: Any, config_id: str, count: int) -> list[tuple[str, int]]:
    """count sessions, each after one short turn; (session id, events stored)."""

    async def one() -> tuple[str, int]:
        created = await stub.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id=config_id, start=True)
        )
        events = 0
        async for _ in stub.SendMessage(
            session_service_pb2.SendMessageRequest(session_id=created.session_id, content="hi")
        ):
            events += 1
        return str(created.session_id), events

    results: list[tuple[str, int]] = []
    for start in range(0, count, 50):
        results += await asyncio.gather(*(one() for _ in range(start, min(count, start + 50))))
    return results


async def follow(stub: Any, session_id: str, replay: int) -> Any:
    """A follow=true stream, returned once it has replayed the session's stored events."""
    call = stub.StreamEvents(
        session_service_pb2.StreamEventsRequest(session_id=session_id, follow=True)
    )
    for _ in range(replay):
        await call.read()
    return call


def transactions(url: str) -> int:
    """Transactions the database has run (PostgreSQL's own statistics)."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


async def idle(
    session: Service, stubs: Stubs, config_stub: Any, args: argparse.Namespace, postgres: str
) -> None:
    """Idle streams: CPU and, on PostgreSQL, transactions while nothing happens."""
    await config_stub.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="idle",
            config=config_pb2.Config(name="idle", yaml_content=document(3, 0)),
        )
    )
    sessions = await sessions_with_one_turn(stubs[0], "idle", args.idle_sessions)
    calls = []
    for index in range(args.idle_streams):
        session_id, replay = sessions[index % len(sessions)]
        calls.append(await follow(stubs[index], session_id, replay))
    # PostgreSQL's backends report their counts when idle at most every 10 s: wait that
    # out, so that the set-up's transactions are not counted as idle ones.
    await asyncio.sleep(STATS_DELAY if postgres else 2)
    tx_before = await asyncio.to_thread(transactions, postgres) if postgres else 0
    tx_started = time.perf_counter()
    cpu_before, wall_before = session.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(args.idle_seconds)
    cpu = session.cpu_seconds() - cpu_before
    wall = time.perf_counter() - wall_before
    print(
        f"idle: {args.idle_streams} follow streams on {args.idle_sessions} sessions for "
        f"{wall:.1f}s: SessionService CPU {cpu:.2f}s = {100 * cpu / wall:.1f}% of a core",
        flush=True,
    )
    if postgres:
        await asyncio.sleep(STATS_DELAY)
        tx = await asyncio.to_thread(transactions, postgres) - tx_before
        span = time.perf_counter() - tx_started
        # Counts everything on the database: ConfigService's watch too, and this bench.
        print(
            f"idle: PostgreSQL ran {tx} transactions in {span:.0f}s = {tx / span:.1f}/s",
            flush=True,
        )
    for call in calls:
        call.cancel()


async def fan_out(
    session: Service, stubs: Stubs, config_stub: Any, args: argparse.Namespace
) -> None:
    """followers of one turn: the delay from each event's event_time to its arrival."""
    await config_stub.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="fan",
            config=config_pb2.Config(name="fan", yaml_content=document(args.tokens, args.delay_ms)),
        )
    )
    [(session_id, replay)] = await sessions_with_one_turn(stubs[0], "fan", 1)
    calls = [await follow(stubs[i], session_id, replay) for i in range(args.followers)]
    delays: list[list[float]] = [[] for _ in calls]
    counts = [0] * len(calls)

    async def receive(index: int, call: Any) -> None:
        while True:
            event = await call.read()
            if not isinstance(event, events_pb2.SessionEvent):
                return
            arrived = time.time()
            stamped = event.event_time.seconds + event.event_time.nanos / 1e9
            delays[index].append(arrived - stamped)
            counts[index] += 1
            if event.HasField("turn_completed") or event.HasField("turn_failed"):
                return

    receivers = [asyncio.create_task(receive(i, call)) for i, call in enumerate(calls)]
    cpu_before, wall_before = session.cpu_seconds(), time.perf_counter()
    sent = 0
    async for _ in stubs[0].SendMessage(
        session_service_pb2.SendMessageRequest(session_id=session_id, content="go")
    ):
        sent += 1
    await asyncio.wait_for(asyncio.gather(*receivers), 120)
    cpu = session.cpu_seconds() - cpu_before
    wall = time.perf_counter() - wall_before
    for call in calls:
        call.cancel()
    every = [d for per in delays for d in per]
    assert all(c == sent for c in counts), f"followers got {set(counts)} events, sent {sent}"
    print(
        f"fan-out: {args.followers} followers x {sent} events ({args.tokens} deltas, one per "
        f"{args.delay_ms:g} ms): delivery p50 {statistics.median(every) * 1e3:.1f} ms, "
        f"p99 {percentile(every, 0.99) * 1e3:.1f} ms, max {max(every) * 1e3:.1f} ms; "
        f"SessionService CPU {100 * cpu / wall:.0f}% of a core over {wall:.1f}s",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    """Benchmark entry point."""
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'tandem.db'}"
        postgres = url if make_url(url).get_backend_name() == "postgresql" else ""
        config_url = url if postgres else f"sqlite:///{Path(tmp) / 'config.db'}"
        async with (
            service(
                "config_service",
                {
                    "TANDEM_LOG_FORMAT": "text",
                    "TANDEM_DATABASE_URL": config_url,
                    "TANDEM_CONFIG_SERVICE_LISTEN": "127.0.0.1:0",
                },
            ) as configs,
            service(
                "session_service",
                {
                    "TANDEM_LOG_FORMAT": "text",
                    "TANDEM_DATABASE_URL": url,
                    "TANDEM_SESSION_SERVICE_LISTEN": "127.0.0.1:0",
                    "TANDEM_CONFIG_SERVICE_TARGET": configs.address,
                    "TANDEM_WORKSPACE_ROOT": str(Path(tmp) / "workspaces"),
                    # One tenant runs everything here: measure following, not the quotas.
                    "TANDEM_QUOTA_CONCURRENT_TURNS": "0",
                    "TANDEM_QUOTA_SEND_MESSAGES_PER_MINUTE": "0",
                },
            ) as session,
        ):
            print(
                f"database: {make_url(url).get_backend_name()}; SessionService pid "
                f"{session.process.pid}; {os.cpu_count()} CPUs",
                flush=True,
            )
            stubs = Stubs(session.address, args.channels)
            async with grpc.aio.insecure_channel(configs.address) as config_channel:
                config_stub = config_service_pb2_grpc.ConfigServiceStub(config_channel)
                try:
                    if args.idle_streams:
                        await idle(session, stubs, config_stub, args, postgres)
                    if args.followers:
                        await fan_out(session, stubs, config_stub, args)
                finally:
                    await stubs.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", default=os.environ.get("TANDEM_BENCH_DATABASE_URL"))
    parser.add_argument("--idle-streams", type=int, default=500)
    parser.add_argument("--idle-sessions", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--followers", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--channels", type=int, default=4)
    asyncio.run(main(parser.parse_args()))

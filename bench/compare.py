"""Tandem beside a bare gRPC server and LangGraph's figures, with PASS/FAIL per target.

Every server is its own process, started the way `make run` starts them; the clients run here,
in this process. Per database (a SQLite file each, or a fresh PostgreSQL database
`tandem_bench_<pid>`), ConfigService and SessionService run behind an API key list (as in
production; the bare server has no authentication at all), with `provider-echo` answering
without delay, so what is measured is Tandem's own cost. A bare `grpc.aio` server
(`bench.bare_server`) gives the floor: gRPC and protobuf alone, in Python, on this machine.

Scenarios (callers and sizes shrink with --quick):

1. GetConfig of a 1 KiB document, 32 concurrent callers (bare: a unary call returning 1 KiB).
2. CreateSession with a warm prepared-bundle cache, 32 concurrent callers.
3. One turn streaming 2,000 tokens (bare: one stream of as many events).
4. 100 turns of 100 tokens started at once (bare: 100 streams at once).
5. 1,000 idle StreamEvents(follow=true) followers on 10 sessions of one SessionService, then
   one turn per session: delivery delay of its first event (receive time minus event_time).

Server CPU is read from /proc/<pid>/stat around each measurement, so it is what the server
processes used, not the clients. The clients share the machine's cores with the servers: the
"client CPU" column says how busy this process was (near 100 % means the client may be what
limits the rate, for the bare server and Tandem alike).

    .venv/bin/python -m bench.compare [--quick] [--databases sqlite,postgres] [--json]
                                      [--postgres-url URL] [--logs DIR]

The full run takes about two minutes on a 2-core machine, --quick about half a minute per
database. Progress goes to stderr; the tables (and the JSON) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import secrets
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

from bench import bare_server
from bench.processes import (
    ServerProcess,
    cpu_seconds,
    postgres_version,
    scratch_postgres,
    spawn,
    wait_healthy,
    wait_listening,
)
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
from shared.auth.keys import hash_key

# LangGraph 0.16.7 `langgraph dev` in-memory, measured on this 2-core machine, Tandem issue 16.
LANGGRAPH_ASSISTANTS_GET = 2_053.0  # assistants.get, req/s
LANGGRAPH_THREADS_CREATE = 497.0  # threads.create, req/s
LANGGRAPH_EVENTS = 1_882.0  # streamed events/s, many runs at once

MIB = 1024 * 1024
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CONFIG_HEALTH = "tandem.config.v1.ConfigService"
SESSION_HEALTH = "tandem.session.v1.SessionService"
# Several connections per server, as several client replicas would open; each channel gets
# its own subchannel pool, or gRPC would share one connection between them.
CHANNELS = 4
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class Scale:
    """How long and how wide each scenario runs."""

    unary_seconds: float
    warmup_seconds: float
    burst_turns: int
    followers: int
    idle_seconds: float
    callers: int = 32
    # One stream lasts a fraction of a second: repeat it, so one hiccup does not decide.
    stream_runs: int = 5
    turn_tokens: int = 2_000
    burst_tokens: int = 100
    follow_sessions: int = 10


FULL = Scale(unary_seconds=10, warmup_seconds=1, burst_turns=100, followers=1_000, idle_seconds=5)
QUICK = Scale(
    unary_seconds=2,
    warmup_seconds=0.5,
    burst_turns=20,
    followers=200,
    idle_seconds=1,
    stream_runs=3,
)


# --- figures -------------------------------------------------------------------------------


@dataclass
class UnaryFigures:
    """A closed-loop run of one unary method."""

    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float  # per call, summed over the servers involved
    server_rss_mib: float
    client_cpu_percent: float  # of one core

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


@dataclass
class StreamFigures:
    """One server-streaming call read to its end, repeated: medians, and CPU over all runs."""

    runs: int
    events: int  # per run
    rate: float  # events/s, median run
    first_event_ms: float  # median run
    server_cpu_us: float  # per event, over every run


@dataclass
class BurstFigures:
    """Many streams started at once."""

    streams: int
    events: int
    seconds: float
    first_p50_ms: float
    first_p99_ms: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass
class FollowFigures:
    """Idle followers on one SessionService, then one new event each."""

    followers: int
    sessions: int
    rss_before_mib: float
    rss_mib: float
    idle_cpu_percent: float
    delivery_p50_ms: float
    delivery_p99_ms: float


@dataclass
class BareFigures:
    unary: UnaryFigures
    stream: StreamFigures
    burst: BurstFigures


@dataclass
class TandemFigures:
    get_config: UnaryFigures
    create_session: UnaryFigures
    stream: StreamFigures
    burst: BurstFigures
    follow: FollowFigures


@dataclass
class Target:
    """One target of the issue and whether this run met it."""

    name: str
    database: str
    measured: float
    bound: float
    at_least: bool
    unit: str

    @property
    def passed(self) -> bool:
        return self.measured >= self.bound if self.at_least else self.measured <= self.bound


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


# --- load ----------------------------------------------------------------------------------

UnaryCall = Callable[[int], Awaitable[object]]
OpenStream = Callable[[], AsyncIterator[Any]]
FollowCall = grpc.aio.UnaryStreamCall[
    session_service_pb2.StreamEventsRequest, events_pb2.SessionEvent
]


async def closed_loop(callers: int, seconds: float, call: UnaryCall) -> tuple[list[float], float]:
    """call(caller index) repeated by callers concurrent loops; (latencies, elapsed)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    # A TaskGroup: one failed call stops the other callers instead of leaving them running.
    async with asyncio.TaskGroup() as group:
        for index in range(callers):
            group.create_task(caller(index))
    return latencies, time.perf_counter() - started


async def measure_unary(
    servers: Sequence[ServerProcess], call: UnaryCall, scale: Scale
) -> UnaryFigures:
    """A warm-up, then a measured closed loop with the servers' CPU read around it."""
    await closed_loop(scale.callers, scale.warmup_seconds, call)
    server_before = sum(server.cpu_seconds() for server in servers)
    client_before = cpu_seconds("self")
    latencies, elapsed = await closed_loop(scale.callers, scale.unary_seconds, call)
    server_cpu = sum(server.cpu_seconds() for server in servers) - server_before
    client_cpu = cpu_seconds("self") - client_before
    return UnaryFigures(
        calls=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        server_cpu_ms=server_cpu / len(latencies) * 1e3,
        server_rss_mib=sum(server.rss_bytes() for server in servers) / MIB,
        client_cpu_percent=100 * client_cpu / elapsed,
    )


async def read_stream(open_stream: OpenStream) -> tuple[int, float, float]:
    """(events, seconds to the first, seconds to the end) of one stream read to its end."""
    started = time.perf_counter()
    first = 0.0
    events = 0
    async for _ in open_stream():
        if events == 0:
            first = time.perf_counter() - started
        events += 1
    return events, first, time.perf_counter() - started


async def measure_stream(server: ServerProcess, opens: Sequence[OpenStream]) -> StreamFigures:
    """Each stream in turn, alone, with the server's CPU read around them."""
    before = server.cpu_seconds()
    runs = [await read_stream(open_stream) for open_stream in opens]
    cpu = server.cpu_seconds() - before
    events = sum(count for count, _, _ in runs)
    return StreamFigures(
        runs=len(runs),
        events=runs[0][0],
        rate=statistics.median(count / seconds for count, _, seconds in runs),
        first_event_ms=statistics.median(first for _, first, _ in runs) * 1e3,
        server_cpu_us=cpu / events * 1e6,
    )


async def measure_burst(opens: Sequence[OpenStream]) -> BurstFigures:
    """All streams started at once; time to first event counted from each one's start."""
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(read_stream(open_stream)) for open_stream in opens]
    elapsed = time.perf_counter() - started
    results = [task.result() for task in tasks]
    firsts = [first for _, first, _ in results]
    return BurstFigures(
        streams=len(opens),
        events=sum(events for events, _, _ in results),
        seconds=elapsed,
        first_p50_ms=percentile(firsts, 0.50) * 1e3,
        first_p99_ms=percentile(firsts, 0.99) * 1e3,
    )


# --- the bare server -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def channels(address: str) -> AsyncIterator[list[grpc.aio.Channel]]:
    """CHANNELS channels (connections) to address, closed on exit."""
    opened = [grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(CHANNELS)]
    try:
        yield opened
    finally:
        for channel in opened:
            await channel.close(None)


async def start_server(
    name: str, args: list[str], env: dict[str, str], log_dir: Path, stack: contextlib.ExitStack
) -> ServerProcess:
    """Spawns a server whose stop is registered on stack, and waits until it listens."""
    server = spawn(name, args, env, log_dir / f"{name}.log")
    stack.callback(server.stop)
    await wait_listening(server)
    return server


async def measure_bare(
    scale: Scale, turn_events: int, burst_events: int, log_dir: Path
) -> BareFigures:
    """The bare server's three scenarios, with as many events per stream as Tandem sent."""
    with contextlib.ExitStack() as stack:
        server = await start_server(
            "bare-server", ["-m", "bench.bare_server", "--port", "0"], {}, log_dir, stack
        )
        async with channels(server.address) as opened:
            unary = [
                channel.unary_unary(
                    bare_server.UNARY,
                    request_serializer=config_service_pb2.GetConfigRequest.SerializeToString,
                    response_deserializer=config_pb2.Config.FromString,
                )
                for channel in opened
            ]
            streams = [
                channel.unary_stream(
                    bare_server.STREAM,
                    request_serializer=wrappers_pb2.Int64Value.SerializeToString,
                    response_deserializer=events_pb2.SessionEvent.FromString,
                )
                for channel in opened
            ]
            request = config_service_pb2.GetConfigRequest(config_id="bench")
            await unary[0](request, wait_for_ready=True, timeout=30)

            def open_stream(index: int, events: int) -> OpenStream:
                def start() -> AsyncIterator[Any]:
                    return aiter(streams[index % CHANNELS](wrappers_pb2.Int64Value(value=events)))

                return start

            progress("bare grpc.aio: unary")
            figures_unary = await measure_unary(
                [server], lambda i: unary[i % CHANNELS](request), scale
            )
            progress("bare grpc.aio: streams")
            await read_stream(open_stream(0, turn_events))  # warm-up
            stream = await measure_stream(
                server, [open_stream(0, turn_events) for _ in range(scale.stream_runs)]
            )
            burst = await measure_burst(
                [open_stream(i, burst_events) for i in range(scale.burst_turns)]
            )
            return BareFigures(figures_unary, stream, burst)


# --- Tandem --------------------------------------------------------------------------------


def turn_document(name: str, tokens: int) -> str:
    """A bundle whose echo reply is `tokens` words, streamed without delay (turn_bench's)."""
    reply = " ".join(f"w{n}" for n in range(tokens))
    body = {
        "bundle": {"name": name},
        "session": {"orchestrator": "loop-streaming"},
        "providers": [{"module": "provider-echo", "config": {"reply": reply, "delay_ms": 0}}],
    }
    return f"---\n{json.dumps(body)}\n---\nYou are a benchmark.\n"


def get_config_document(size: int) -> str:
    """A bundle of exactly size bytes: GetConfig then returns about what the bare server does."""
    document = turn_document("bench-get", 3)
    return document + "x" * (size - len(document.encode()) - 1) + "\n"


# The README's typical config: the shipped tandem:dev bundle plus a provider.
CREATE_DOCUMENT = """\
---
bundle:
  name: bench-create
includes:
  - tandem:dev
providers:
  - module: provider-echo
---
You are a benchmark.
"""


@dataclass
class Tandem:
    """Both services of one database, and stubs over several connections to each."""

    config: ServerProcess
    session: ServerProcess
    configs: list[config_service_pb2_grpc.ConfigServiceAsyncStub]
    sessions: list[session_service_pb2_grpc.SessionServiceAsyncStub]
    metadata: tuple[tuple[str, str], ...]

    async def create_config(self, config_id: str, document: str) -> None:
        await self.configs[0].CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id=config_id,
                config=config_pb2.Config(name=config_id, yaml_content=document),
            ),
            metadata=self.metadata,
        )

    async def started_sessions(self, config_id: str, count: int) -> list[str]:
        request = session_service_pb2.CreateSessionRequest(config_id=config_id, start=True)
        created = await asyncio.gather(
            *(
                self.sessions[n % CHANNELS].CreateSession(request, metadata=self.metadata)
                for n in range(count)
            )
        )
        return [session.session_id for session in created]

    def turn(self, session_id: str, index: int = 0) -> OpenStream:
        """Opens SendMessage on the session when called."""
        request = session_service_pb2.SendMessageRequest(session_id=session_id, content="go")

        def start() -> AsyncIterator[Any]:
            call = self.sessions[index % CHANNELS].SendMessage(request, metadata=self.metadata)
            return aiter(call)

        return start


def tandem_env(
    database: str | None, tmp: Path, keys: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(ConfigService env, SessionService env without its target); None: SQLite files."""
    key_file = tmp / "keys.json"
    key_file.write_text(
        json.dumps(
            {
                "keys": [
                    {"name": "bench", "tenant": "bench", "role": "writer", "sha256": keys["bench"]},
                    {
                        "name": "session",
                        "tenant": "system",
                        "role": "service",
                        "sha256": keys["svc"],
                    },
                ]
            }
        )
    )
    common = {
        "TANDEM_API_KEYS_FILE": str(key_file),
        "TANDEM_LOG_FORMAT": "text",
        # Measure Tandem, not an exporter: telemetry stays off whatever this shell sets.
        "OTEL_SDK_DISABLED": "true",
        # Stop quickly at the end; nothing is in flight by then.
        "TANDEM_SHUTDOWN_DRAIN_SECONDS": "0",
        "TANDEM_SHUTDOWN_GRACE_SECONDS": "2",
    }
    config = {
        **common,
        "TANDEM_DATABASE_URL": database or f"sqlite:///{tmp / 'config.db'}",
        "TANDEM_CONFIG_SERVICE_LISTEN": "127.0.0.1:0",
    }
    session = {
        **common,
        "TANDEM_DATABASE_URL": database or f"sqlite:///{tmp / 'session.db'}",
        "TANDEM_SESSION_SERVICE_LISTEN": "127.0.0.1:0",
        "TANDEM_WORKSPACE_ROOT": str(tmp / "workspaces"),
        # One tenant runs all the load here: measure Tandem, not the per-tenant limits.
        "TANDEM_QUOTA_CONCURRENT_TURNS": "0",
        "TANDEM_QUOTA_SEND_MESSAGES_PER_MINUTE": "0",
    }
    return config, session


@contextlib.asynccontextmanager
async def running_tandem(database: str | None, tmp: Path, logs: Path) -> AsyncIterator[Tandem]:
    """ConfigService, then SessionService pointed at it, each a process; stopped on exit."""
    bench_key, service_key = (f"tdm_{secrets.token_urlsafe(24)}" for _ in range(2))
    keys = {"bench": hash_key(bench_key), "svc": hash_key(service_key)}
    config_env, session_env = tandem_env(database, tmp, keys)
    with contextlib.ExitStack() as stack:
        config = await start_server(
            "config-service", ["-m", "config_service"], config_env, logs, stack
        )
        await wait_healthy(config, CONFIG_HEALTH)
        session_env["TANDEM_CONFIG_SERVICE_TARGET"] = config.address
        session_env["TANDEM_CONFIG_SERVICE_API_KEY"] = service_key
        session = await start_server(
            "session-service", ["-m", "session_service"], session_env, logs, stack
        )
        await wait_healthy(session, SESSION_HEALTH)
        async with channels(config.address) as to_config, channels(session.address) as to_session:
            yield Tandem(
                config,
                session,
                [config_service_pb2_grpc.ConfigServiceStub(c) for c in to_config],
                [session_service_pb2_grpc.SessionServiceStub(c) for c in to_session],
                (("authorization", f"Bearer {bench_key}"),),
            )


async def first_delivery(call: FollowCall) -> float:
    """Seconds from the first new event's event_time to its arrival; reads to the turn's end."""
    delay: float | None = None
    while True:
        event = await call.read()
        if not isinstance(event, events_pb2.SessionEvent):
            raise RuntimeError("a follow stream ended before the turn did")
        if delay is None:
            # Server and client read the same clock: this is the delivery delay.
            delay = time.time() - event.event_time.ToNanoseconds() / 1e9
        if event.HasField("turn_completed") or event.HasField("turn_failed"):
            return delay


async def attach(tandem: Tandem, index: int, session_id: str, replay: int) -> FollowCall:
    """A follow=true stream, returned once it has replayed the session's stored events."""
    request = session_service_pb2.StreamEventsRequest(session_id=session_id, follow=True)
    call = tandem.sessions[index % CHANNELS].StreamEvents(request, metadata=tandem.metadata)
    for _ in range(replay):
        await call.read()
    return call


async def measure_follow(tandem: Tandem, scale: Scale) -> FollowFigures:
    """Idle followers attached, then one turn per followed session, one session at a time."""
    sessions = await tandem.started_sessions("bench-follow", scale.follow_sessions)
    # One short turn each first, so that a follower proves it is attached by replaying it.
    replays = [(await read_stream(tandem.turn(s)))[0] for s in sessions]
    rss_before = tandem.session.rss_bytes()
    calls: list[list[FollowCall]] = [[] for _ in sessions]
    for start in range(0, scale.followers, 100):
        batch = range(start, min(scale.followers, start + 100))
        attached = await asyncio.gather(
            *(
                attach(tandem, n, sessions[n % len(sessions)], replays[n % len(sessions)])
                for n in batch
            )
        )
        for n, call in zip(batch, attached, strict=True):
            calls[n % len(sessions)].append(call)
    cpu_before = tandem.session.cpu_seconds()
    await asyncio.sleep(scale.idle_seconds)
    idle_cpu = tandem.session.cpu_seconds() - cpu_before
    rss = tandem.session.rss_bytes()
    delays: list[float] = []
    try:
        for session_id, followers in zip(sessions, calls, strict=True):
            receivers = [asyncio.create_task(first_delivery(call)) for call in followers]
            await read_stream(tandem.turn(session_id))
            delays += await asyncio.wait_for(asyncio.gather(*receivers), 60)
    finally:
        for followers in calls:
            for call in followers:
                call.cancel()
    return FollowFigures(
        followers=scale.followers,
        sessions=len(sessions),
        rss_before_mib=rss_before / MIB,
        rss_mib=rss / MIB,
        idle_cpu_percent=100 * idle_cpu / scale.idle_seconds,
        delivery_p50_ms=percentile(delays, 0.50) * 1e3,
        delivery_p99_ms=percentile(delays, 0.99) * 1e3,
    )


async def prepare_configs(tandem: Tandem, scale: Scale) -> None:
    """Stores every config the scenarios use, before any is measured."""
    await tandem.create_config("bench-get", get_config_document(1024))
    await tandem.create_config("bench-create", CREATE_DOCUMENT)
    await tandem.create_config("bench-turn", turn_document("bench-turn", scale.turn_tokens))
    await tandem.create_config("bench-burst", turn_document("bench-burst", scale.burst_tokens))
    await tandem.create_config("bench-follow", turn_document("bench-follow", 3))


async def measure_tandem(
    database: str | None, label: str, tmp: Path, logs: Path, scale: Scale
) -> TandemFigures:
    """All five scenarios on one database."""
    async with running_tandem(database, tmp, logs) as tandem:
        await prepare_configs(tandem, scale)
        # Followers first: their RSS figure should not carry the other scenarios' garbage.
        progress(f"Tandem {label}: {scale.followers} followers")
        follow = await measure_follow(tandem, scale)
        progress(f"Tandem {label}: GetConfig")
        get = config_service_pb2.GetConfigRequest(config_id="bench-get")
        get_config = await measure_unary(
            [tandem.config],
            lambda i: tandem.configs[i % CHANNELS].GetConfig(get, metadata=tandem.metadata),
            scale,
        )
        progress(f"Tandem {label}: CreateSession")
        create = session_service_pb2.CreateSessionRequest(config_id="bench-create")
        # The warm-up inside measure_unary prepares the config once: the cache is then warm.
        create_session = await measure_unary(
            [tandem.config, tandem.session],
            lambda i: tandem.sessions[i % CHANNELS].CreateSession(create, metadata=tandem.metadata),
            scale,
        )
        progress(f"Tandem {label}: turns")
        # A session per turn: each is the first turn of its session, as in the burst.
        turn_sessions = await tandem.started_sessions("bench-turn", scale.stream_runs)
        [warm_session, *burst_sessions] = await tandem.started_sessions(
            "bench-burst", scale.burst_turns + 1
        )
        await read_stream(tandem.turn(warm_session))  # warm-up: first-turn costs out of the way
        stream = await measure_stream(tandem.session, [tandem.turn(s) for s in turn_sessions])
        burst = await measure_burst([tandem.turn(s, i) for i, s in enumerate(burst_sessions)])
        return TandemFigures(get_config, create_session, stream, burst, follow)


# --- report --------------------------------------------------------------------------------


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report (and the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine(databases: Sequence[str], postgres_url: str) -> dict[str, str]:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    facts = {
        "cpu": model,
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "sqlite": sqlite3.sqlite_version,
        "load average (1, 5, 15 min) at start": " ".join(
            Path("/proc/loadavg").read_text().split()[:3]
        ),
    }
    if "postgres" in databases:
        facts["postgresql"] = postgres_version(postgres_url)
    return facts


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A left-aligned first column, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    print(f"\n{title}\n{line(headers)}\n{'  '.join('-' * w for w in widths)}")
    for row in rows:
        print(line(row))


def ratio(value: float, bare: float) -> str:
    return f"{value / bare:.2f}x" if bare else "-"


def unary_table(title: str, bare: UnaryFigures, tandem: dict[str, UnaryFigures]) -> None:
    headers = [
        "server",
        "req/s",
        "x bare",
        "p50 ms",
        "p99 ms",
        "server CPU/call ms",
        "x bare",
        "server RSS MiB",
        "client CPU %",
    ]
    rows = [
        [
            label,
            f"{f.rate:,.0f}",
            ratio(f.rate, bare.rate),
            f"{f.p50_ms:.2f}",
            f"{f.p99_ms:.2f}",
            f"{f.server_cpu_ms:.3f}",
            ratio(f.server_cpu_ms, bare.server_cpu_ms),
            f"{f.server_rss_mib:.0f}",
            f"{f.client_cpu_percent:.0f}",
        ]
        for label, f in [("bare grpc.aio (unary, 1 KiB)", bare), *tandem.items()]
    ]
    table(title, headers, rows)


def print_report(
    facts: dict[str, str], scale: Scale, bare: BareFigures, tandem: dict[str, TandemFigures]
) -> None:
    """One table per scenario, each figure with its ratio to the bare server where one exists."""
    print("Machine:")
    for key, value in facts.items():
        print(f"  {key}: {value}")
    print(
        f"Scale: {scale.callers} callers, {scale.unary_seconds:g}s per unary scenario "
        f"(after {scale.warmup_seconds:g}s warm-up), {scale.burst_turns} turns at once, "
        f"{scale.followers} followers on {scale.follow_sessions} sessions"
    )
    names = {f"Tandem {db}": f for db, f in tandem.items()}
    unary_table(
        f"1. GetConfig (1 KiB document), {scale.callers} callers",
        bare.unary,
        {k: f.get_config for k, f in names.items()},
    )
    unary_table(
        f"2. CreateSession, warm cache, {scale.callers} callers "
        "(CPU and RSS: both services; 'x bare': against the bare unary call)",
        bare.unary,
        {k: f.create_session for k, f in names.items()},
    )
    table(
        f"3. One turn of {scale.turn_tokens:,} tokens, alone (median of {scale.stream_runs} runs; "
        "server CPU: SessionService, over all runs)",
        ["server", "events", "events/s", "x bare", "first event ms", "CPU/event us", "x bare"],
        [
            [
                label,
                str(s.events),
                f"{s.rate:,.0f}",
                ratio(s.rate, bare.stream.rate),
                f"{s.first_event_ms:.2f}",
                f"{s.server_cpu_us:.1f}",
                ratio(s.server_cpu_us, bare.stream.server_cpu_us),
            ]
            for label, s in [("bare grpc.aio stream", bare.stream)]
            + [(k, f.stream) for k, f in names.items()]
        ],
    )
    table(
        f"4. {scale.burst_turns} turns of {scale.burst_tokens} tokens at once",
        ["server", "events", "events/s", "x bare", "TTFE p50 ms", "TTFE p99 ms", "x bare p99"],
        [
            [
                label,
                str(b.events),
                f"{b.rate:,.0f}",
                ratio(b.rate, bare.burst.rate),
                f"{b.first_p50_ms:.1f}",
                f"{b.first_p99_ms:.1f}",
                ratio(b.first_p99_ms, bare.burst.first_p99_ms),
            ]
            for label, b in [(f"bare grpc.aio, {bare.burst.streams} streams", bare.burst)]
            + [(k, f.burst) for k, f in names.items()]
        ],
    )
    table(
        f"5. {scale.followers} idle followers on {scale.follow_sessions} sessions, one "
        "SessionService (no bare equivalent)",
        [
            "server",
            "RSS before MiB",
            "RSS attached MiB",
            "idle CPU %",
            "delivery p50 ms",
            "delivery p99 ms",
        ],
        [
            [
                label,
                f"{f.follow.rss_before_mib:.0f}",
                f"{f.follow.rss_mib:.0f}",
                f"{f.follow.idle_cpu_percent:.1f}",
                f"{f.follow.delivery_p50_ms:.1f}",
                f"{f.follow.delivery_p99_ms:.1f}",
            ]
            for label, f in names.items()
        ],
    )


def targets(scale: Scale, bare: BareFigures, tandem: dict[str, TandemFigures]) -> list[Target]:
    """The issue's targets, on each database."""
    return [t for db, f in tandem.items() for t in database_targets(scale, bare, db, f)]


def database_targets(scale: Scale, bare: BareFigures, db: str, f: TandemFigures) -> list[Target]:
    """The issue's targets, on one database."""

    def at_least(name: str, measured: float, bound: float, unit: str) -> Target:
        return Target(name, db, measured, bound, True, unit)

    def at_most(name: str, measured: float, bound: float, unit: str) -> Target:
        return Target(name, db, measured, bound, False, unit)

    turns = f"{scale.burst_turns} turns at once"
    followers = f"{scale.followers} idle followers"
    get, create = f.get_config, f.create_session
    return [
        at_least("GetConfig >= 0.6x bare unary", get.rate, 0.6 * bare.unary.rate, "req/s"),
        at_least(
            "GetConfig >= 1.5x LangGraph assistants.get",
            get.rate,
            1.5 * LANGGRAPH_ASSISTANTS_GET,
            "req/s",
        ),
        at_most("server CPU per GetConfig <= 0.35 ms", get.server_cpu_ms, 0.35, "ms"),
        at_least(
            "CreateSession (warm) >= 2x LangGraph threads.create",
            create.rate,
            2 * LANGGRAPH_THREADS_CREATE,
            "req/s",
        ),
        at_most("CPU per CreateSession (both services) <= 1.2 ms", create.server_cpu_ms, 1.2, "ms"),
        at_most(f"{turns}: TTFE p50 <= 150 ms", f.burst.first_p50_ms, 150, "ms"),
        at_most(f"{turns}: TTFE p99 <= 500 ms", f.burst.first_p99_ms, 500, "ms"),
        at_least(
            f"{turns}: events/s >= 3x LangGraph", f.burst.rate, 3 * LANGGRAPH_EVENTS, "events/s"
        ),
        at_least(
            f"{scale.turn_tokens:,}-token turn >= 0.5x bare stream",
            f.stream.rate,
            0.5 * bare.stream.rate,
            "events/s",
        ),
        at_most(f"{followers}: SessionService RSS <= 300 MiB", f.follow.rss_mib, 300, "MiB"),
        at_most(
            f"{followers}: new-event delivery p99 <= 100 ms",
            f.follow.delivery_p99_ms,
            100,
            "ms",
        ),
    ]


def print_targets(found: Sequence[Target]) -> None:
    table(
        "Targets (LangGraph: 0.16.7 `langgraph dev` in-memory on this machine, Tandem issue 16)",
        ["target", "database", "measured", "bound", "unit", "result"],
        [
            [
                t.name,
                t.database,
                f"{t.measured:,.2f}",
                f"{'>=' if t.at_least else '<='} {t.bound:,.2f}",
                t.unit,
                "PASS" if t.passed else "FAIL",
            ]
            for t in found
        ],
    )
    print(f"\n{sum(t.passed for t in found)} of {len(found)} targets pass.")


def as_json(
    facts: dict[str, str],
    scale: Scale,
    bare: BareFigures,
    tandem: dict[str, TandemFigures],
    found: Sequence[Target],
) -> str:
    """Every figure (rates included) and every target, as one JSON object."""

    def figures(value: Any) -> dict[str, Any]:
        out = dataclasses.asdict(value)
        for name, field in vars(value).items():
            if dataclasses.is_dataclass(field) and not isinstance(field, type):
                out[name] = figures(field)
        if hasattr(value, "rate"):
            out["rate"] = value.rate
        return out

    return json.dumps(
        {
            "machine": facts,
            "scale": dataclasses.asdict(scale),
            "bare": figures(bare),
            "tandem": {db: figures(f) for db, f in tandem.items()},
            "targets": [{**dataclasses.asdict(t), "passed": t.passed} for t in found],
        },
        indent=2,
    )


# --- entry point ---------------------------------------------------------------------------


async def run_database(
    db: str, tmp: Path, logs: Path, scale: Scale, postgres_url: str
) -> TandemFigures:
    """Tandem's scenarios on SQLite files, or on a scratch PostgreSQL database dropped after."""
    folder = tmp / db
    folder.mkdir()
    logs = logs / db
    logs.mkdir(parents=True, exist_ok=True)
    if db == "sqlite":
        return await measure_tandem(None, db, folder, logs, scale)
    with scratch_postgres(postgres_url, f"tandem_bench_{os.getpid()}") as url:
        return await measure_tandem(
            url.render_as_string(hide_password=False), db, folder, logs, scale
        )


async def run(args: argparse.Namespace) -> None:
    """Tandem on each database, then the bare server, then the report."""
    # SIGTERM ends the run like Ctrl-C does: cancelled, so every server is stopped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    scale = QUICK if args.quick else FULL
    facts = machine(args.databases, args.postgres_url)
    tandem: dict[str, TandemFigures] = {}
    with tempfile.TemporaryDirectory(prefix="tandem-compare-") as tmp:
        logs = Path(args.logs) if args.logs else Path(tmp)
        for db in args.databases:
            tandem[db] = await run_database(db, Path(tmp), logs, scale, args.postgres_url)
        # As many events per stream as a Tandem turn sent (its deltas plus start, usage, end).
        first = next(iter(tandem.values()))
        per_turn = first.burst.events // first.burst.streams
        bare = await measure_bare(scale, first.stream.events, per_turn, logs)
    found = targets(scale, bare, tandem)
    print_report(facts, scale, bare, tandem)
    print_targets(found)
    if args.json:
        print(as_json(facts, scale, bare, tandem, found))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer streams")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--logs", help="keep the servers' logs in this folder")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES,
        help="a PostgreSQL server to create the scratch database on",
    )
    args = parser.parse_args(argv)
    args.databases = [db.strip() for db in args.databases.split(",") if db.strip()]
    unknown = set(args.databases) - {"sqlite", "postgres"}
    if unknown or not args.databases:
        parser.error(f"--databases: sqlite and/or postgres, not {sorted(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every server was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Turn streaming: events per second for one stream and for 100 at once, beside bare grpc.aio.

Starts ConfigService and SessionService in process (SQLite files by default, or the database
in --database / TANDEM_BENCH_DATABASE_URL) with `provider-echo` and no delay, so what is
measured is Tandem's own cost per event: the event log writes (deltas batched), the wake-ups
and the gRPC stream. In the same run a bare `grpc.aio` server streams the same number of
constant SessionEvents, which is what gRPC and protobuf alone cost.

    .venv/bin/python -m bench.turn_bench [--tokens 2000] [--streams 100] [--database URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from bench.stack import started_sessions
from shared._generated.tandem.session.v1 import (
    events_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)
from tests.support.pair import running_pair


def document(tokens: int) -> str:
    """A bundle whose echo reply is `tokens` words, streamed without delay."""
    reply = " ".join(f"w{n}" for n in range(tokens))
    body = {
        "bundle": {"name": "bench"},
        "session": {"orchestrator": "loop-streaming"},
        "providers": [{"module": "provider-echo", "config": {"reply": reply}}],
    }
    return f"---\n{json.dumps(body)}\n---\nYou are a benchmark.\n"


async def one_turn(stub: Any, session_id: str) -> tuple[int, float, float]:
    """(events, seconds to the first event, seconds in all) of one SendMessage."""
    started = time.perf_counter()
    first = 0.0
    count = 0
    async for _ in stub.SendMessage(
        session_service_pb2.SendMessageRequest(session_id=session_id, content="go")
    ):
        if count == 0:
            first = time.perf_counter() - started
        count += 1
    return count, first, time.perf_counter() - started


class ConstantStream(session_service_pb2_grpc.SessionServiceServicer):
    """Streams n prebuilt SessionEvents: the cost of gRPC and protobuf alone."""

    def __init__(self, events: int) -> None:
        self._events = events
        self._event = events_pb2.SessionEvent(
            sequence=12345, turn_id="f" * 32, content_delta=events_pb2.ContentDelta(text="w123 ")
        )

    async def SendMessage(
        self, request: session_service_pb2.SendMessageRequest, context: object
    ) -> AsyncIterator[events_pb2.SessionEvent]:
        for _ in range(self._events):
            yield self._event


def report(label: str, events: int, seconds: float, firsts: list[float]) -> None:
    """Prints one row."""
    first = statistics.median(firsts) * 1e3
    print(
        f"{label:<44} {events / seconds:>9.0f} events/s   "
        f"{seconds / events * 1e6:7.1f} us/event   first event p50 {first:6.2f} ms",
        flush=True,
    )


async def measure(address: str, label: str, streams: int, sessions: list[str]) -> int:
    """One stream, then `streams` at once, against address; returns events per turn."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        count, first, seconds = await one_turn(stub, sessions[0])
        report(f"{label}: 1 stream", count, seconds, [first])
        started = time.perf_counter()
        results = await asyncio.gather(*(one_turn(stub, s) for s in sessions[1 : streams + 1]))
        elapsed = time.perf_counter() - started
        report(
            f"{label}: {streams} concurrent streams",
            sum(r[0] for r in results),
            elapsed,
            [r[1] for r in results],
        )
        return count


async def main(tokens: int, streams: int, database: str | None) -> None:
    """Benchmark entry point."""
    with tempfile.TemporaryDirectory() as tmp:
        config_url = database or f"sqlite:///{Path(tmp) / 'config.db'}"
        session_url = database or f"sqlite:///{Path(tmp) / 'session.db'}"
        # The run is one tenant with --streams turns at once; measure streaming, not the
        # default per-tenant limits (bench/limits_bench.py measures those).
        unlimited = {"quota_concurrent_turns": 0, "quota_send_messages_per_minute": 0}
        async with running_pair(
            config_url, session_database_url=session_url, session=unlimited
        ) as running:
            sessions = running.session_app
            ids = await started_sessions(running, "bench", document(tokens), streams + 1)
            print(
                f"database: {session_url.split('://')[0]}; provider-echo, {tokens} tokens a "
                "turn, no delay",
                flush=True,
            )
            before = sessions.runner.flushes
            per_turn = await measure(sessions.server.address, "Tandem SendMessage", streams, ids)
            flushes = sessions.runner.flushes - before
            print(
                f"event log: {flushes} transactions for {per_turn * (streams + 1)} events "
                f"({per_turn * (streams + 1) / max(flushes, 1):.0f} events per transaction)",
                flush=True,
            )

    bare = grpc.aio.server()
    session_service_pb2_grpc.add_SessionServiceServicer_to_server(
        # Only SendMessage is served; the other RPCs stay abstract on purpose.
        ConstantStream(per_turn),  # type: ignore[abstract]
        bare,
    )
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    try:
        await measure(f"127.0.0.1:{port}", "bare grpc.aio stream", streams, ["x"] * (streams + 1))
    finally:
        await bare.stop(0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of the process (services and clients): {rss:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--database", default=os.environ.get("TANDEM_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.streams, args.database))

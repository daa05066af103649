"""What the per-tenant limits cost SendMessage: accepted turns per second, limits off and on.

Starts ConfigService and SessionService in process (SQLite files by default, or the database
in --database / TANDEM_BENCH_DATABASE_URL for both). --clients callers each
send --turns short echo turns to their own session. "off" sets every quota to 0; "on" keeps
the concurrent-turn quota and SendMessage rate on (high enough never to refuse), so each
accept also takes the tenant's lock, counts running turns and updates the rate bucket.

    .venv/bin/python -m bench.limits_bench [--clients 16] [--turns 25] [--database URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from bench.stack import started_sessions
from bench.turn_bench import document, one_turn
from shared._generated.tandem.session.v1 import session_service_pb2_grpc
from tests.support.pair import running_pair

OFF: dict[str, Any] = {
    "quota_configs": 0,
    "quota_sessions": 0,
    "quota_concurrent_turns": 0,
    "quota_send_messages_per_minute": 0,
}
ON: dict[str, Any] = {
    "quota_configs": 1_000,
    "quota_sessions": 1_000,
    "quota_concurrent_turns": 1_000,
    "quota_send_messages_per_minute": 1_000_000,
}


async def run(
    label: str,
    config_url: str,
    session_url: str,
    limits: dict[str, Any],
    clients: int,
    turns: int,
) -> None:
    """One configuration: clients x turns SendMessage calls."""
    async with running_pair(config_url, session_database_url=session_url, common=limits) as running:
        # Runs may share one database: each stores its own config.
        config_id = f"limits-{uuid.uuid4().hex[:8]}"
        ids = await started_sessions(running, config_id, document(5), clients)
        async with grpc.aio.insecure_channel(running.session_app.server.address) as channel:
            stub = session_service_pb2_grpc.SessionServiceStub(channel)
            await one_turn(stub, ids[0])  # warm the prepared cache and the connection

            async def client(session_id: str) -> list[float]:
                return [(await one_turn(stub, session_id))[1] for _ in range(turns)]

            started = time.perf_counter()
            firsts = [f for result in await asyncio.gather(*map(client, ids)) for f in result]
            elapsed = time.perf_counter() - started
    firsts.sort()
    print(
        f"{label:<28} {len(firsts) / elapsed:8.0f} turns/s   first event "
        f"p50 {statistics.median(firsts) * 1e3:6.2f} ms   "
        f"p99 {firsts[int(len(firsts) * 0.99) - 1] * 1e3:6.2f} ms",
        flush=True,
    )


async def main(clients: int, turns: int, database: str | None) -> None:
    """Benchmark entry point."""
    print(f"{clients} clients x {turns} turns, provider-echo (5 tokens), one tenant", flush=True)
    for label, limits in (("limits off", OFF), ("limits on", ON)):
        if database is None:
            with tempfile.TemporaryDirectory() as tmp:
                config_url = f"sqlite:///{Path(tmp) / 'config.db'}"
                session_url = f"sqlite:///{Path(tmp) / 'session.db'}"
                await run(f"sqlite, {label}", config_url, session_url, limits, clients, turns)
        else:
            backend = database.split(":", 1)[0].split("+", 1)[0]
            await run(f"{backend}, {label}", database, database, limits, clients, turns)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--turns", type=int, default=25)
    parser.add_argument("--database", default=os.environ.get("TANDEM_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.turns, args.database))

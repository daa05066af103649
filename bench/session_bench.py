"""CreateSession latency with a warm and a cold prepared-bundle cache, and sessions per second.

Starts ConfigService and SessionService in process (SQLite files by default, or the database
in --database / TANDEM_BENCH_DATABASE_URL for both) and stores configs that each include two
tenant configs plus the shipped `tandem:dev` bundle. Then it measures:

- cold: the first session of each of N distinct configs, so every call prepares (fetches the
  config and its two includes over gRPC, composes, expands, resolves modules);
- warm: sessions of one already-prepared config, one at a time;
- throughput: warm sessions under 32 concurrent clients.

    .venv/bin/python -m bench.session_bench [--seconds 5] [--clients 32] [--cold 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
from pathlib import Path

import grpc

from bench.load import report, run_calls, run_load
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc
from tests.support.pair import running_pair

BASE = """\
bundle:
  name: {name}
session:
  orchestrator: loop-basic
providers:
  - module: provider-echo
    config:
      delay_ms: 1
tools:
  - module: tool-filesystem
    config:
      allowed_paths: ["{name}"]
"""

APP = """\
---
bundle:
  name: app-{n}
includes:
  - tandem:dev
  - bundle: base-a
  - bundle: base-b
providers:
  - module: provider-echo
    config:
      api_key: ${{BENCH_SECRET:not-set}}
---
You are app {n}.
"""


async def main(seconds: float, clients: int, cold: int, database: str | None) -> None:
    """Benchmark entry point."""
    with tempfile.TemporaryDirectory() as tmp:
        config_url = database or f"sqlite:///{Path(tmp) / 'config.db'}"
        session_url = database or f"sqlite:///{Path(tmp) / 'session.db'}"
        async with running_pair(
            config_url,
            session_database_url=session_url,
            session={
                "prepared_cache_size": cold + 16,
                # The benchmark's bundles reference this one variable, as an operator allows.
                "bundle_env_allow": "BENCH_SECRET",
            },
        ) as running:
            sessions = running.session_app
            stub = running.configs
            for name in ("base-a", "base-b"):
                await stub.CreateConfig(
                    config_service_pb2.CreateConfigRequest(
                        config_id=name,
                        config=config_pb2.Config(name=name, yaml_content=BASE.format(name=name)),
                    )
                )
            for n in range(cold + 1):
                await stub.CreateConfig(
                    config_service_pb2.CreateConfigRequest(
                        config_id=f"app-{n}",
                        config=config_pb2.Config(name=f"app-{n}", yaml_content=APP.format(n=n)),
                    )
                )
            # Let the cache's change stream catch up, so the creations above evict nothing
            # while we measure.
            for _ in range(600):
                if sessions.watcher.last_sequence >= cold + 3:
                    break
                await asyncio.sleep(0.05)
            print(
                f"database: {config_url.split('://')[0]}; configs include 2 tenant configs "
                f"+ tandem:dev; {clients} clients for {seconds:.0f}s",
                flush=True,
            )
            channels = [grpc.aio.insecure_channel(sessions.server.address) for _ in range(clients)]
            stubs = [session_service_pb2_grpc.SessionServiceStub(c) for c in channels]
            try:

                async def create_cold(n: int) -> object:
                    return await stubs[0].CreateSession(
                        session_service_pb2.CreateSessionRequest(config_id=f"app-{n + 1}")
                    )

                async def create_warm(n: int) -> object:
                    return await stubs[n % clients].CreateSession(
                        session_service_pb2.CreateSessionRequest(config_id="app-0")
                    )

                await create_warm(0)  # prepares app-0 once
                before = sessions.cache.stats()
                report(
                    f"CreateSession cold cache (1 client, {cold})",
                    await run_calls(cold, 1, create_cold),
                )
                report(
                    "CreateSession warm cache (1 client, 500)", await run_calls(500, 1, create_warm)
                )
                turn = iter(range(1 << 62))

                async def concurrent() -> object:
                    return await create_warm(next(turn))

                report(
                    f"CreateSession warm cache ({clients} clients)",
                    await run_load(clients, seconds, concurrent),
                )
                after = sessions.cache.stats()
                print(
                    f"cache: {after.misses - before.misses} misses, "
                    f"{after.hits - before.hits} hits, {after.size} entries",
                    flush=True,
                )
            finally:
                for channel in channels:
                    await channel.close(None)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of the process (both services and the clients): {rss:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--cold", type=int, default=200)
    parser.add_argument("--database", default=os.environ.get("TANDEM_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.clients, args.cold, args.database))

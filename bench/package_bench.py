"""Bundle packages: ImportBundle of a 100-file package, and preparing a bundle built from one.

Starts ConfigService and SessionService as separate processes (SQLite files by default, or
--database URL for both), and a bare grpc.aio server in this process for scale. Then:

- import: ImportBundle of a generated 100-file package (20 behaviors, 15 agents, 10 context
  files, docs), first as new, then again unchanged, then with one file changed;
- prepare, cold: PrepareConfig of N new configs that each include the package's root bundle
  (which itself includes 20 behaviors, names 15 agents and 10 context files), so every call
  fetches and composes all of them;
- prepare, warm: PrepareConfig of one of them again, served from the prepared cache;
- bare: a unary call to a grpc.aio server that does nothing, the floor of any RPC here.

    .venv/bin/python -m bench.package_bench [--cold 20] [--warm 200] [--database URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from bench.follow_bench import service
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import session_service_pb2, session_service_pb2_grpc

NAMESPACE = "benchpkg"


def package(revision: int = 0) -> list[config_service_pb2.BundleFile]:
    """A 100-file package in the Amplifier layout; revision changes one context file."""
    files: dict[str, str] = {}
    for k in range(10):
        files[f"context/c{k}.md"] = f"# Context {k}\n\n" + "A rule worth knowing.\n" * 40
    if revision:
        files["context/c0.md"] += f"\nRevision {revision}.\n"
    for j in range(15):
        files[f"agents/a{j}.md"] = (
            f"---\nmeta:\n  name: a{j}\n  description: Agent number {j}.\n---\n\n"
            f"You are agent {j}. @{NAMESPACE}:context/c{j % 10}.md\n"
        )
    for i in range(20):
        files[f"behaviors/b{i}.yaml"] = (
            f"bundle:\n  name: behavior-{i}\n  version: 1.0.0\n"
            f"context:\n  include:\n    - {NAMESPACE}:context/c{i % 10}.md\n"
            f"agents:\n  include:\n    - {NAMESPACE}:a{i % 15}\n"
        )
    includes = "".join(f"  - bundle: {NAMESPACE}:behaviors/b{i}\n" for i in range(20))
    agents = "".join(f"    - {NAMESPACE}:a{j}\n" for j in range(15))
    context = "".join(f"    - {NAMESPACE}:context/c{k}.md\n" for k in range(10))
    files["bundle.md"] = (
        f"---\nbundle:\n  name: {NAMESPACE}\n  version: 1.0.0\nincludes:\n{includes}"
        "providers:\n  - module: provider-echo\n"
        f"agents:\n  include:\n{agents}context:\n  include:\n{context}---\n\n"
        "You are the benchmark assistant.\n"
    )
    for n in range(100 - len(files)):
        files[f"docs/d{n}.md"] = f"# Note {n}\n\nBackground reading.\n"
    return [
        config_service_pb2.BundleFile(path=path, content=text.encode())
        for path, text in sorted(files.items())
    ]


def line(label: str, samples: list[float]) -> None:
    """Prints median, p95 and max of samples, in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    print(
        f"{label:<44} n={len(samples):<4} p50 {statistics.median(samples) * 1000:7.1f} ms"
        f"   p95 {p95 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"
    )


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    """Seconds one awaited call took."""
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


class _Nothing(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A bare service whose one method answers an empty message."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def empty(request: bytes, context: object) -> bytes:
            del request, context
            return b""

        return grpc.unary_unary_rpc_method_handler(
            empty, request_deserializer=None, response_serializer=None
        )


async def bare_floor(calls: int) -> list[float]:
    """Latencies of a unary call to a grpc.aio server with no interceptors and no work."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Nothing(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/bare.Bare/Nothing", request_serializer=None, response_deserializer=None
            )
            return [await timed(lambda: call(b"")) for _ in range(calls)]
    finally:
        await server.stop(0)


async def main(cold: int, warm: int, database: str) -> None:
    """Benchmark entry point."""
    with tempfile.TemporaryDirectory() as tmp:
        config_url = database or f"sqlite:///{Path(tmp) / 'config.db'}"
        session_url = database or f"sqlite:///{Path(tmp) / 'session.db'}"
        async with (
            service(
                "config_service",
                {"TANDEM_DATABASE_URL": config_url, "TANDEM_CONFIG_SERVICE_LISTEN": "127.0.0.1:0"},
            ) as configs_process,
            service(
                "session_service",
                {
                    "TANDEM_DATABASE_URL": session_url,
                    "TANDEM_SESSION_SERVICE_LISTEN": "127.0.0.1:0",
                    "TANDEM_CONFIG_SERVICE_TARGET": configs_process.address,
                    "TANDEM_WORKSPACE_ROOT": str(Path(tmp) / "workspaces"),
                },
            ) as sessions_process,
            grpc.aio.insecure_channel(configs_process.address) as config_channel,
            grpc.aio.insecure_channel(sessions_process.address) as session_channel,
        ):
            configs = config_service_pb2_grpc.ConfigServiceStub(config_channel)
            sessions = session_service_pb2_grpc.SessionServiceStub(session_channel)
            await run(configs, sessions, cold, warm)
    line("bare grpc.aio unary call (floor)", await bare_floor(warm))


async def run(
    config_stub: config_service_pb2_grpc.ConfigServiceAsyncStub,
    session_stub: session_service_pb2_grpc.SessionServiceAsyncStub,
    cold: int,
    warm: int,
) -> None:
    """The import and preparation figures, printed as they are taken."""
    files = package()
    size = sum(len(f.content) for f in files)
    print(f"package: {len(files)} files, {size / 1024:.0f} KiB")
    results: list[config_service_pb2.ImportBundleResponse] = []

    async def do_import(revision: int) -> None:
        results.append(
            await config_stub.ImportBundle(
                config_service_pb2.ImportBundleRequest(
                    files=package(revision), source_uri="git+https://bench.invalid/pkg@main"
                )
            )
        )

    line("ImportBundle, new 100-file package", [await timed(lambda: do_import(0))])
    line("ImportBundle, same package again (unchanged)", [await timed(lambda: do_import(0))])
    line("ImportBundle, one file changed", [await timed(lambda: do_import(1))])
    last = results[-1]
    print(
        f"  last import: created {last.created} updated {last.updated} "
        f"unchanged {last.unchanged} deleted {last.deleted}"
    )
    cold_samples: list[float] = []
    config_ids: list[str] = []
    for n in range(cold):
        document = json.dumps({"bundle": {"name": f"user-{n}"}, "includes": [NAMESPACE]})
        created = await config_stub.CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id=f"user-{n}",
                config=config_pb2.Config(name=f"user-{n}", yaml_content=document),
            )
        )
        config_ids.append(created.config_id)
        request = session_service_pb2.PrepareConfigRequest(config_id=created.config_id)
        started = time.perf_counter()
        prepared = await session_stub.PrepareConfig(request)
        cold_samples.append(time.perf_counter() - started)
        if not prepared.valid:
            raise RuntimeError(f"preparation failed: {prepared.violations[:3]}")
    print(
        f"prepared: {len(prepared.composed_from)} bundles composed, {len(prepared.agents)} "
        f"agents, {len(prepared.context)} context files"
    )
    line("PrepareConfig, cold (20 includes, 15 agents, 10 ctx)", cold_samples)
    warm_request = session_service_pb2.PrepareConfigRequest(config_id=config_ids[0])
    line(
        "PrepareConfig, warm (prepared cache)",
        [await timed(lambda: session_stub.PrepareConfig(warm_request)) for _ in range(warm)],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", type=int, default=20)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--database", default="")
    args = parser.parse_args()
    asyncio.run(main(args.cold, args.warm, args.database))

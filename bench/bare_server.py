"""A bare `grpc.aio` server: the floor that `bench.compare` measures Tandem against.

No interceptors, no authentication, no database: what gRPC and protobuf alone cost in Python
on this machine. Two methods, served by a generic handler with the generated messages'
serializers, so no proto of its own is needed:

- `/bench.Bare/Unary`: GetConfigRequest -> a Config of 1 KiB (about what GetConfig returns
  for the benchmark's 1 KiB document);
- `/bench.Bare/Stream`: Int64Value(n) -> n constant SessionEvents, each a one-word content
  delta, as a turn streams them.

    .venv/bin/python -m bench.bare_server [--port N]   # 0 (default): a free port

It logs `bare server listening on HOST:PORT` to stderr once it serves, and stops on SIGTERM
or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import timestamp_pb2, wrappers_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import events_pb2

SERVICE = "bench.Bare"
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/Stream"
RESPONSE_BYTES = 1024

# Built once: the server's work per call is then only gRPC's and protobuf's serialization.
_CONFIG = config_pb2.Config(config_id="bench", name="bench", yaml_content="x" * RESPONSE_BYTES)
_EVENT = events_pb2.SessionEvent(
    sequence=12345,
    turn_id="f" * 32,
    event_time=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_456_789),
    content_delta=events_pb2.ContentDelta(text="w123 "),
)


async def _unary(
    request: config_service_pb2.GetConfigRequest, context: grpc.aio.ServicerContext[object, object]
) -> config_pb2.Config:
    return _CONFIG


async def _stream(
    request: wrappers_pb2.Int64Value, context: grpc.aio.ServicerContext[object, object]
) -> AsyncIterator[events_pb2.SessionEvent]:
    for _ in range(request.value):
        yield _EVENT


def handler() -> grpc.GenericRpcHandler[Any, Any]:
    """Both methods, with the generated messages' own (de)serializers."""
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                _unary,
                request_deserializer=config_service_pb2.GetConfigRequest.FromString,
                response_serializer=config_pb2.Config.SerializeToString,
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                _stream,
                request_deserializer=wrappers_pb2.Int64Value.FromString,
                response_serializer=events_pb2.SessionEvent.SerializeToString,
            ),
        },
    )


async def serve(host: str, port: int) -> None:
    """Serves until SIGTERM or SIGINT."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(f"bare server listening on {host}:{bound}", file=sys.stderr, flush=True)
    await stopping.wait()
    await server.stop(0)


def main() -> None:
    """`python -m bench.bare_server [--host H] [--port N]`."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

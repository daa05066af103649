"""`python -m shared.rpc.healthcheck ADDRESS [SERVICE]`: exit 0 when the service is SERVING.

For container healthchecks where no gRPC probe is built in (docker compose). Kubernetes uses
its native gRPC probes instead.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str, timeout: float) -> str:
    """The serving status of service at address, or the gRPC status code's name on failure."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main(argv: list[str] | None = None) -> int:
    """Prints the status; 0 when SERVING, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m shared.rpc.healthcheck")
    parser.add_argument("address", help="host:port")
    parser.add_argument(
        "service", nargs="?", default="", help="e.g. tandem.config.v1.ConfigService"
    )
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    status = check(args.address, args.service, args.timeout)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())

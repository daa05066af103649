"""Client-side helpers for failed calls and their rich gRPC errors, read as any client would."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar, cast

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

M = TypeVar("M", bound=Message)


async def rpc_error(awaitable: object) -> grpc.aio.AioRpcError:
    """The error a call fails with; the test fails if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status of a failed call; from_call also checks code and message agree."""
    # AioRpcError has the code()/details()/trailing_metadata() accessors from_call reads.
    status = rpc_status.from_call(cast(grpc.Call, error))
    assert status is not None, "the error carries no grpc-status-details-bin trailer"
    assert status.message == error.details()
    return status


def detail(error: grpc.aio.AioRpcError, kind: type[M]) -> M:
    """The one detail of type kind in the error's rich status."""
    found = []
    for packed in rich_status(error).details:
        message = kind()
        if packed.Unpack(message):
            found.append(message)
    assert len(found) == 1, f"expected one {kind.__name__}, found {len(found)}"
    return found[0]


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo every Tandem error carries."""
    return detail(error, error_details_pb2.ErrorInfo)


def seed_workspace(session_id: str, files: Mapping[str, str], tenant: str = "default") -> Path:
    """Writes files into a session's workspace (under the tests' TANDEM_WORKSPACE_ROOT)."""
    workspace = Path(os.environ["TANDEM_WORKSPACE_ROOT"]) / tenant / session_id
    workspace.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (workspace / name).write_text(text, encoding="utf-8")
    return workspace

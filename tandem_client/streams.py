"""Event streams that survive a dropped connection by resuming from the last sequence.

A session's event log is gap-free and numbered, so after UNAVAILABLE (a cut connection, or
a replica draining with SERVER_DRAINING) or a stream that ends before its turn did, the
stream reopens with StreamEvents after the last sequence it yielded: nothing is lost and
nothing is repeated. Reads no config keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import grpc
from google.protobuf import struct_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import events_pb2, session_service_pb2
from tandem_client import convert
from tandem_client.errors import TandemError, Unavailable, error_from_rpc
from tandem_client.models import ConfigChange, Event
from tandem_client.transport import Transport, backoff


def if_busy_value(name: str) -> session_service_pb2.SendMessageRequest.IfBusy.ValueType:
    """SendMessageRequest.if_busy for a strategy's name (ValueError for an unknown one)."""
    key = f"IF_BUSY_{name.upper()}"
    if key not in session_service_pb2.SendMessageRequest.IfBusy.keys():  # noqa: SIM118
        raise ValueError(f"if_busy must be reject, enqueue, interrupt or rollback, not {name!r}")
    return session_service_pb2.SendMessageRequest.IfBusy.Value(key)


async def chat_events(
    transport: Transport,
    session_id: str,
    content: str,
    request_id: str,
    context: Mapping[str, Any] | None,
    *,
    resume: bool = True,
    config_id: str = "",
    config_revision: int = 0,
    if_busy: str = "reject",
) -> AsyncGenerator[Event, None]:
    """The events of the turn SendMessage starts, up to and including its terminal event.

    With config_id (and no session_id) SendMessage first makes the session: its
    session_created event comes first, and names the session a resume follows. if_busy
    ("reject", "enqueue", "interrupt" or "rollback") says what happens while the session
    runs another turn; a queued turn's stream yields its own events once it starts (the
    server's turn_queued notice, which is not logged, is not yielded).
    """
    request = session_service_pb2.SendMessageRequest(
        session_id=session_id,
        content=content,
        request_id=request_id,
        config_id=config_id,
        config_revision=config_revision,
        if_busy=if_busy_value(if_busy),
    )
    if context is not None:
        request.context.CopyFrom(_struct(context))
    last_sequence = 0
    turn_id = ""
    failures = 0
    while True:
        call: grpc.aio.UnaryStreamCall[Any, events_pb2.SessionEvent]
        if turn_id:
            call = transport.sessions.StreamEvents(
                session_service_pb2.StreamEventsRequest(
                    session_id=session_id, after_sequence=last_sequence
                ),
                metadata=transport.metadata,
            )
        else:
            # Before the first event the turn's id is unknown: the same request_id makes the
            # server re-attach to the turn it may have started already rather than start one
            # (and, with config_id, return the session it made rather than make another).
            call = transport.sessions.SendMessage(request, metadata=transport.metadata)
        error: TandemError | None = None
        try:
            async for pb in call:
                if pb.sequence <= last_sequence or (turn_id and pb.turn_id != turn_id):
                    continue
                event = convert.event(pb)
                if event.session is not None:
                    session_id = event.session.session_id
                turn_id = turn_id or event.turn_id
                last_sequence = event.sequence
                failures = 0
                yield event
                if event.terminal:
                    return
        except grpc.RpcError as exc:
            error = error_from_rpc(exc)
            if not isinstance(error, Unavailable):
                raise error from None
        finally:
            call.cancel()
        if not resume:
            raise error or Unavailable("The event stream ended before the turn did.")
        failures += 1
        if failures > transport.retries:
            raise error or Unavailable("The event stream keeps ending before the turn does.")
        await asyncio.sleep(backoff(failures, error.retry_delay if error else None))


async def session_events(
    transport: Transport, session_id: str, after_sequence: int, follow: bool
) -> AsyncGenerator[Event, None]:
    """StreamEvents after after_sequence, resumed after a drop; ends when the server ends it."""
    last_sequence = after_sequence
    failures = 0
    while True:
        call = transport.sessions.StreamEvents(
            session_service_pb2.StreamEventsRequest(
                session_id=session_id, after_sequence=last_sequence, follow=follow
            ),
            metadata=transport.metadata,
        )
        error: TandemError | None = None
        try:
            async for pb in call:
                if pb.sequence <= last_sequence:
                    continue
                last_sequence = pb.sequence
                failures = 0
                yield convert.event(pb)
            if not follow:
                # Without follow the server ends the stream once no turn runs: a clean end.
                return
        except grpc.RpcError as exc:
            error = error_from_rpc(exc)
            if not isinstance(error, Unavailable):
                raise error from None
        finally:
            call.cancel()
        failures += 1
        if failures > transport.retries:
            raise error or Unavailable("The event stream keeps ending.")
        await asyncio.sleep(backoff(failures, error.retry_delay if error else None))


async def config_changes(
    transport: Transport, after_sequence: int
) -> AsyncGenerator[ConfigChange, None]:
    """WatchConfigs after after_sequence, following until closed; resumed after a drop."""
    last_sequence = after_sequence
    failures = 0
    while True:
        call: grpc.aio.UnaryStreamCall[Any, config_pb2.ConfigChange] = (
            transport.configs.WatchConfigs(
                config_service_pb2.WatchConfigsRequest(after_sequence=last_sequence),
                metadata=transport.metadata,
            )
        )
        error: TandemError | None = None
        try:
            async for pb in call:
                if last_sequence and pb.sequence <= last_sequence:
                    continue
                last_sequence = pb.sequence
                failures = 0
                yield convert.change(pb)
        except grpc.RpcError as exc:
            error = error_from_rpc(exc)
            if not isinstance(error, Unavailable):
                raise error from None
        finally:
            call.cancel()
        failures += 1
        if failures > transport.retries:
            raise error or Unavailable("The change stream keeps ending.")
        await asyncio.sleep(backoff(failures, error.retry_delay if error else None))


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct

"""SendMessage if_busy through real stubs, on SQLite and PostgreSQL (two replicas on the latter).

The model is provider-openai talking to a local scripted server, which holds the first turn
(its reply stops before its end for a while, or until the turn is cancelled) and records what
each later turn was sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import pytest

from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared._generated.tandem.session.v1 import (
    session_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)
from tandem_client import AsyncTandem
from tests.support.databases import fresh_postgres_database, require_postgres
from tests.support.llm_servers import (
    LlmServer,
    ScriptedResponse,
    llm_server,
    openai_chunk,
    openai_done,
    openai_provider,
    openai_text_reply,
    openai_usage,
    stream,
)
from tests.support.pair import Stack, running_config_service, running_session_service
from tests.support.rpc import error_info, rpc_error
from tests.support.turns import Event, collect, get_session, kinds, next_event, transcript

IfBusy = session_service_pb2.SendMessageRequest.IfBusy

if TYPE_CHECKING:
    IfBusyValue: TypeAlias = session_service_pb2.SendMessageRequest.IfBusy.ValueType
    SessionStub: TypeAlias = session_service_pb2_grpc.SessionServiceAsyncStub


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


def held(text: str, seconds: float) -> ScriptedResponse:
    """A reply that streams text at once, then holds the turn for seconds before it ends
    (long holds end only when the turn is cancelled)."""
    return stream(
        [
            openai_chunk({"role": "assistant", "content": "", "refusal": None}),
            openai_chunk({"content": text}),
            openai_chunk({}, finish_reason="stop", delay=seconds),
            openai_usage(11, 7),
            openai_done(),
        ]
    )


def answer(text: str) -> ScriptedResponse:
    return stream(openai_text_reply([text]))


def document(server: LlmServer) -> str:
    body: dict[str, Any] = {
        "bundle": {"name": "busy"},
        "session": {"orchestrator": "loop-streaming", "context": "context-simple"},
        "providers": [openai_provider(server)],
    }
    return f"---\n{json.dumps(body)}\n---\nYou answer.\n"


async def busy_session(
    configs: Any, sessions: SessionStub, server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setenv("TANDEM_TEST_SECRET", "s3cr3t-value-never-shown")
    await configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="busy",
            config=config_pb2.Config(name="busy", yaml_content=document(server)),
        )
    )
    created = await sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="busy", start=True)
    )
    return str(created.session_id)


def send(
    stub: SessionStub,
    session_id: str,
    content: str,
    if_busy: IfBusyValue = IfBusy.IF_BUSY_UNSPECIFIED,
    request_id: str = "",
) -> Any:
    return stub.SendMessage(
        session_service_pb2.SendMessageRequest(
            session_id=session_id, content=content, if_busy=if_busy, request_id=request_id
        )
    )


async def until_text(call: Any) -> list[Event]:
    """The running turn's events up to its first streamed text: it is under way."""
    seen = [await next_event(call)]
    while not seen[-1].HasField("content_delta"):
        seen.append(await next_event(call))
    return seen


async def queued(call: Any) -> Event:
    first = await next_event(call)
    assert first.HasField("turn_queued"), kinds([first])
    assert first.turn_queued.turn_id == first.turn_id
    return first


def only_its_own(first: Event, rest: Sequence[Event]) -> None:
    """A queued turn's stream: TurnQueued, then exactly its turn from start to end."""
    assert {e.turn_id for e in rest} == {first.turn_queued.turn_id}
    assert kinds(rest)[0] == "turn_started"
    assert kinds(rest)[-1] == "turn_completed"
    assert kinds(rest).count("turn_started") == 1


def said(messages: Sequence[session_pb2.Message]) -> list[str]:
    return [m.content for m in messages]


def user_contents(server: LlmServer, index: int) -> list[str]:
    """What the model was sent as user messages on its index-th call."""
    return [m["content"] for m in server.requests[index].body["messages"] if m["role"] == "user"]


async def test_reject_is_the_default_and_names_the_running_turn(
    stack: Stack, server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(held("partial", 60.0))
    session_id = await busy_session(stack.configs, stack.sessions, server, monkeypatch)
    first = send(stack.sessions, session_id, "A")
    running = await until_text(first)
    for if_busy in (IfBusy.IF_BUSY_UNSPECIFIED, IfBusy.IF_BUSY_REJECT):
        error = await rpc_error(collect(send(stack.sessions, session_id, "B", if_busy)))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(error).reason == "TURN_IN_PROGRESS"
        assert error_info(error).metadata["turn_id"] == running[0].turn_id
    assert (await get_session(stack, session_id)).queued_turns == 0
    await stack.sessions.CancelTurn(session_service_pb2.CancelTurnRequest(session_id=session_id))
    assert kinds(await collect(first))[-1] == "turn_cancelled"


async def test_enqueued_turns_run_after_the_running_one_in_order(
    stack: Stack, server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(held("answer A", 3.0), answer("answer B"), answer("answer C"))
    session_id = await busy_session(stack.configs, stack.sessions, server, monkeypatch)
    a = send(stack.sessions, session_id, "A")
    await until_text(a)
    b = send(stack.sessions, session_id, "B", IfBusy.IF_BUSY_ENQUEUE)
    b_queued = await queued(b)
    c = send(stack.sessions, session_id, "C", IfBusy.IF_BUSY_ENQUEUE)
    c_queued = await queued(c)
    assert (b_queued.turn_queued.position, c_queued.turn_queued.position) == (1, 2)
    assert (await get_session(stack, session_id)).queued_turns == 2

    a_rest, b_rest, c_rest = await asyncio.gather(collect(a), collect(b), collect(c))

    assert kinds(a_rest)[-1] == "turn_completed"
    only_its_own(b_queued, b_rest)
    only_its_own(c_queued, c_rest)
    assert b_rest[0].sequence > a_rest[-1].sequence
    assert c_rest[0].sequence > b_rest[-1].sequence
    assert said(await transcript(stack, session_id)) == [
        "A",
        "answer A",
        "B",
        "answer B",
        "C",
        "answer C",
    ]
    assert len(server.requests) == 3
    assert user_contents(server, 2) == ["A", "B", "C"]
    assert (await get_session(stack, session_id)).queued_turns == 0


async def test_interrupt_cancels_the_running_turn_keeps_its_partial_reply_then_runs(
    stack: Stack, server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(held("half of A", 60.0), answer("answer B"))
    session_id = await busy_session(stack.configs, stack.sessions, server, monkeypatch)
    a = send(stack.sessions, session_id, "A")
    await until_text(a)
    b = send(stack.sessions, session_id, "B", IfBusy.IF_BUSY_INTERRUPT)
    b_queued = await queued(b)
    assert b_queued.turn_queued.position == 1

    a_rest, b_rest = await asyncio.gather(collect(a), collect(b))

    assert kinds(a_rest)[-1] == "turn_cancelled"
    assert a_rest[-1].turn_cancelled.partial_message.content == "half of A"
    only_its_own(b_queued, b_rest)
    assert said(await transcript(stack, session_id)) == ["A", "half of A", "B", "answer B"]
    # The next model call sees the interrupted exchange, as the user did.
    assert user_contents(server, 1) == ["A", "B"]


async def test_rollback_removes_the_running_turns_messages_but_the_log_keeps_them(
    stack: Stack, server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(answer("answer 0"), held("half of A", 60.0), answer("answer B"))
    session_id = await busy_session(stack.configs, stack.sessions, server, monkeypatch)
    await collect(send(stack.sessions, session_id, "zero"))
    a = send(stack.sessions, session_id, "A")
    await until_text(a)
    b = send(stack.sessions, session_id, "B instead", IfBusy.IF_BUSY_ROLLBACK)
    b_queued = await queued(b)

    a_rest, b_rest = await asyncio.gather(collect(a), collect(b))

    assert kinds(a_rest)[-1] == "turn_cancelled"
    assert a_rest[-1].turn_cancelled.reason == "rolled back"
    only_its_own(b_queued, b_rest)
    assert said(await transcript(stack, session_id)) == [
        "zero",
        "answer 0",
        "B instead",
        "answer B",
    ]
    # The model never hears of the rolled-back exchange.
    sent = server.requests[2].body["messages"]
    assert all(m.get("content") not in ("A", "half of A") for m in sent)
    assert user_contents(server, 2) == ["zero", "B instead"]
    # The log still has it, and says where the transcript was cut.
    log = await collect(
        stack.sessions.StreamEvents(
            session_service_pb2.StreamEventsRequest(session_id=session_id, after_sequence=0)
        )
    )
    started = [e.turn_started.user_message.content for e in log if e.HasField("turn_started")]
    assert started == ["zero", "A", "B instead"]
    [rewound] = [e.session_rewound for e in log if e.HasField("session_rewound")]
    assert (rewound.to_sequence, rewound.removed_messages) == (2, 2)
    session = await get_session(stack, session_id)
    assert session.message_count == 4


async def test_a_queued_turn_runs_without_its_client_and_a_retry_re_attaches(
    stack: Stack, server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(held("answer A", 3.0), answer("answer B"), answer("answer C"))
    session_id = await busy_session(stack.configs, stack.sessions, server, monkeypatch)
    a = send(stack.sessions, session_id, "A")
    await until_text(a)
    for content in ("B", "C"):
        call = send(stack.sessions, session_id, content, IfBusy.IF_BUSY_ENQUEUE, f"r-{content}")
        await queued(call)
        call.cancel()  # the client leaves; the turn stays queued
    # A retry while C still waits re-attaches: TurnQueued again, then C's turn.
    c = send(stack.sessions, session_id, "C", IfBusy.IF_BUSY_ENQUEUE, "r-C")
    c_queued = await queued(c)
    assert c_queued.turn_queued.position == 2
    only_its_own(c_queued, await collect(c))
    # B ran with nobody listening; its retry now replays its whole turn from the log.
    b_again = await collect(send(stack.sessions, session_id, "B", IfBusy.IF_BUSY_ENQUEUE, "r-B"))
    assert kinds(b_again)[0] == "turn_started"
    assert kinds(b_again)[-1] == "turn_completed"
    assert b_again[0].turn_started.user_message.content == "B"
    assert said(await transcript(stack, session_id)) == [
        "A",
        "answer A",
        "B",
        "answer B",
        "C",
        "answer C",
    ]
    assert len(server.requests) == 3  # every turn ran once


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_enqueue_across_two_replicas_keeps_the_order(
    server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    # Bundles read the key from the environment when they are prepared, on either replica.
    monkeypatch.setenv("TANDEM_TEST_SECRET", "s3cr3t-value-never-shown")
    server.script(held("answer A", 3.0), answer("answer B"), answer("answer C"), answer("answer D"))
    with fresh_postgres_database() as url:
        async with (
            running_config_service(url, watch_poll_seconds=0.5) as config_app,
            running_session_service(url, config_app.server.address) as first_app,
            running_session_service(url, config_app.server.address) as second_app,
            grpc.aio.insecure_channel(config_app.server.address) as config_channel,
            grpc.aio.insecure_channel(first_app.server.address) as first_channel,
            grpc.aio.insecure_channel(second_app.server.address) as second_channel,
        ):
            configs = config_service_pb2_grpc.ConfigServiceStub(config_channel)
            one = session_service_pb2_grpc.SessionServiceStub(first_channel)
            two = session_service_pb2_grpc.SessionServiceStub(second_channel)
            session_id = await busy_session(configs, one, server, monkeypatch)
            a = send(one, session_id, "A")
            await until_text(a)
            calls = []
            for stub, content in ((two, "B"), (one, "C"), (two, "D")):
                call = send(stub, session_id, content, IfBusy.IF_BUSY_ENQUEUE)
                calls.append((await queued(call), call))
            assert [first.turn_queued.position for first, _ in calls] == [1, 2, 3]

            rests = await asyncio.gather(collect(a), *(collect(call) for _, call in calls))

            for (first, _), rest in zip(calls, rests[1:], strict=True):
                only_its_own(first, rest)
            starts = [rest[0].sequence for rest in rests]
            assert starts == sorted(starts)
            page = await two.ListMessages(
                session_service_pb2.ListMessagesRequest(session_id=session_id, page_size=100)
            )
            assert said(page.messages) == [
                "A",
                "answer A",
                "B",
                "answer B",
                "C",
                "answer C",
                "D",
                "answer D",
            ]
            assert len(server.requests) == 4  # every turn ran exactly once
            assert user_contents(server, 3) == ["A", "B", "C", "D"]


async def test_the_python_client_sends_with_if_busy(
    stack: Stack, server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(held("answer A", 2.0), answer("answer B"))
    session_id = await busy_session(stack.configs, stack.sessions, server, monkeypatch)
    a = send(stack.sessions, session_id, "A")
    await until_text(a)
    async with AsyncTandem(
        stack.config_app.server.address, session_target=stack.session_app.server.address
    ) as client:
        with pytest.raises(ValueError, match="if_busy"):
            client.sessions.chat(session_id, "B", if_busy="later")
        events = [e async for e in client.sessions.chat(session_id, "B", if_busy="enqueue")]
    # The turn_queued notice is not logged, so the client yields the turn's own events.
    assert (events[0].kind, events[-1].kind) == ("turn_started", "turn_completed")
    assert {e.turn_id for e in events} == {events[0].turn_id}
    assert said(await transcript(stack, session_id)) == ["A", "answer A", "B", "answer B"]
    await collect(a)

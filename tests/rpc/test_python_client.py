"""tandem_client against real servers: configs, sessions, turns, approvals, typed errors,
the blocking client, and a chat that resumes by sequence after its connection is cut."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from tandem_client import (
    Aborted,
    AsyncTandem,
    Event,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Tandem,
    Unavailable,
    text_of,
)
from tests.support.pair import Stack
from tests.support.rpc import seed_workspace
from tests.support.turns import bundle

GATED = {"module": "hooks-approval", "config": {"tools": ["write_file"]}}


@contextlib.asynccontextmanager
async def client_of(stack: Stack, session_target: str | None = None) -> AsyncIterator[AsyncTandem]:
    async with AsyncTandem(
        stack.config_app.server.address,
        session_target=session_target or stack.session_app.server.address,
    ) as client:
        yield client


def assert_gap_free(events: list[Event]) -> None:
    sequences = [e.sequence for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))


async def test_configs_create_get_list_update_and_an_etag_conflict(stack: Stack) -> None:
    async with client_of(stack) as client:
        made = await client.configs.create(
            "reviewer", bundle({"reply": "hi"}), description="reviews", tags={"team": "core"}
        )
        assert (made.name, made.revision, made.kind, made.tags) == (
            "reviewer",
            1,
            "BUNDLE",
            {"team": "core"},
        )
        assert made.create_time is not None
        assert made.create_time.tzinfo is not None
        assert made.summary.providers == ["provider-echo"]

        by_id = await client.configs.get(made.config_id)
        by_name = await client.configs.get("reviewer")
        scoped = await client.configs.create("team:notes/guide", bundle({"reply": "hi"}))
        assert (await client.configs.get("team:notes/guide")).config_id == scoped.config_id
        await client.configs.delete(scoped.config_id, etag=scoped.etag)
        assert by_id.config_id == by_name.config_id == made.config_id
        assert by_id.yaml_content == bundle({"reply": "hi"})

        await client.configs.create("other", bundle({"reply": "x"}), tags={"team": "web"})
        page = await client.configs.list(filter='tags.team = "core"')
        assert [c.name for c in page] == ["reviewer"]
        assert page.total_size == 1
        everything = [c.name async for c in client.configs.iterate(page_size=1)]
        assert sorted(everything) == ["other", "reviewer"]

        updated = await client.configs.update(
            made.config_id, description="reviews code", etag=made.etag
        )
        assert (updated.revision, updated.description) == (2, "reviews code")
        with pytest.raises(Aborted) as stale:
            await client.configs.update(made.config_id, description="lost", etag=made.etag)
        assert stale.value.code == "ABORTED"
        assert stale.value.reason == "ETAG_MISMATCH"
        assert stale.value.precondition_violations == [
            ("ETAG_MISMATCH", f"configs/{made.config_id}", "etag is stale")
        ]
        assert "ETAG_MISMATCH" in str(stale.value)

        revisions = await client.configs.revisions(made.config_id)
        assert [r.revision for r in revisions] == [2, 1]
        rolled = await client.configs.rollback(made.config_id, 1, etag=updated.etag)
        assert (rolled.revision, rolled.description) == (3, "reviews")

        checked = await client.configs.validate("bundle:\n  version: 1.0.0\n")
        assert not checked.valid
        assert any(v.field == "bundle.name" and v.severity == "ERROR" for v in checked.violations)

        await client.configs.delete(made.config_id)
        with pytest.raises(NotFound) as missing:
            await client.configs.get(made.config_id)
        assert missing.value.resource is not None
        assert missing.value.resource.resource_type == "Config"


async def test_a_bad_document_raises_invalid_argument_with_located_violations(
    stack: Stack,
) -> None:
    broken = "bundle:\n  version: 1.0.0\ntools:\n  - config: {}\n"
    async with client_of(stack) as client:
        with pytest.raises(InvalidArgument) as refused:
            await client.configs.create("bad", broken)
    error = refused.value
    assert (error.code, error.reason) == ("INVALID_ARGUMENT", "INVALID_BUNDLE")
    by_field = {v.field: v for v in error.field_violations}
    assert by_field["config.yaml_content.tools[0].module"].line == 4
    assert "config.yaml_content.bundle.name" in by_field
    explained = error.explain()
    assert "config.yaml_content.tools[0].module" in explained
    assert "(line 4," in explained


async def test_import_bundle_and_prepare(stack: Stack) -> None:
    files = {"bundle.md": bundle({"reply": "hi"}).replace("turns", "pkg").encode()}
    async with client_of(stack) as client:
        imported = await client.configs.import_bundle(files, source_uri="folder:pkg")
        assert (imported.namespace, imported.created) == ("pkg", 1)
        [stored] = imported.configs
        prepared = await client.sessions.prepare(stored.config_id)
        assert prepared.valid
        assert prepared.default_provider == "provider-echo"
        assert any(m.module == "provider-echo" for m in prepared.modules)


async def test_a_chat_streams_the_reply_and_the_session_calls_work(stack: Stack) -> None:
    async with client_of(stack) as client:
        config = await client.configs.create("chat", bundle({"reply": "hi there"}))
        session = await client.sessions.create(
            config.config_id, display_name="first chat", start=True
        )
        assert (session.status, session.display_name) == ("ACTIVE", "first chat")

        events = [e async for e in client.sessions.chat(session.session_id, "Hello")]
        assert events[0].kind == "turn_started"
        assert events[0].message is not None
        assert events[0].message.content == "Hello"
        assert events[-1].kind == "turn_completed"
        assert events[-1].terminal
        assert text_of(events) == "hi there"
        assert_gap_free(events)

        result = await client.sessions.reply(session.session_id, "Again")
        assert (result.text, result.outcome) == ("hi there", "COMPLETED")
        assert result.message is not None
        assert result.message.role == "ASSISTANT"

        transcript = await client.sessions.messages(session.session_id)
        assert [(m.role, m.content) for m in transcript] == [
            ("USER", "Hello"),
            ("ASSISTANT", "hi there"),
            ("USER", "Again"),
            ("ASSISTANT", "hi there"),
        ]
        replayed = [e async for e in client.sessions.stream(session.session_id)]
        assert [e.sequence for e in replayed] == list(range(1, len(replayed) + 1))
        assert text_of(replayed) == "hi therehi there"

        listed = await client.sessions.list(filter="status = ACTIVE")
        assert [s.session_id for s in listed] == [session.session_id]
        completed = await client.sessions.complete(session.session_id)
        assert completed.status == "COMPLETED"
        assert (await client.sessions.resume(session.session_id)).status == "ACTIVE"
        assert (await client.sessions.terminate(session.session_id)).status == "TERMINATED"
        await client.sessions.delete(session.session_id)
        with pytest.raises(NotFound) as gone:
            await client.sessions.get(session.session_id)
        assert gone.value.reason == "SESSION_NOT_FOUND"


def blocking_round_trip(config_target: str, session_target: str) -> tuple[str, list[str], str]:
    with Tandem(config_target, session_target=session_target) as client:
        config = client.configs.create("sync", bundle({"reply": "hi there"}))
        session = client.sessions.create(config.config_id, start=True)
        with client.sessions.chat(session.session_id, "Hello") as events:
            kinds = [e.kind for e in events]
        reply = client.sessions.reply(session.session_id, "Again").text
        try:
            client.configs.get("no-such-config")
        except NotFound as missing:
            return reply, kinds, missing.code
        raise AssertionError("a missing config was found")


async def test_the_blocking_client_does_the_same_round_trip(stack: Stack) -> None:
    # The servers run on this test's event loop: the blocking client must run elsewhere.
    reply, kinds, missing = await asyncio.to_thread(
        blocking_round_trip,
        stack.config_app.server.address,
        stack.session_app.server.address,
    )
    assert reply == "hi there"
    assert kinds[0] == "turn_started"
    assert kinds[-1] == "turn_completed"
    assert "content_delta" in kinds
    assert missing == "NOT_FOUND"


def gated_document() -> str:
    script = [
        {
            "tool_calls": [
                {"name": "write_file", "arguments": {"path": "note.txt", "content": "approved"}}
            ]
        },
        {"reply": "Done."},
    ]
    body = {
        "bundle": {"name": "gated"},
        "session": {"orchestrator": "loop-streaming", "context": "context-simple"},
        "providers": [{"module": "provider-echo", "config": {"script": script}}],
        "tools": [{"module": "tool-filesystem"}],
        "hooks": [GATED],
    }
    return f"---\n{json.dumps(body)}\n---\nYou write files.\n"


async def test_decide_approval_resumes_a_paused_turn(stack: Stack) -> None:
    async with client_of(stack) as client:
        config = await client.configs.create("gated", gated_document())
        session = await client.sessions.create(config.config_id, start=True)
        seen: list[Event] = []
        decisions = []
        async for event in client.sessions.chat(session.session_id, "Write the note"):
            seen.append(event)
            if event.kind == "approval_requested":
                assert event.name == "write_file"
                assert event.arguments() == {"path": "note.txt", "content": "approved"}
                decisions.append(
                    await client.sessions.decide_approval(
                        session.session_id, event.tool_call_id, True, "fine"
                    )
                )
        [decision] = decisions
        assert (decision.turn_id, decision.resumed, decision.pending_tool_call_ids) == (
            seen[0].turn_id,
            True,
            [],
        )
        decided = next(e for e in seen if e.kind == "approval_decided")
        assert decided.approved
        assert decided.reason == "fine"
        assert seen[-1].kind == "turn_completed"
        assert seen[-1].message is not None
        assert seen[-1].message.content == "Done."
        assert_gap_free(seen)
        assert (seed_workspace(session.session_id, {}) / "note.txt").read_text() == "approved"


class CuttingProxy:
    """A TCP proxy to a server that can cut every open connection at once."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        host, upstream_port = upstream.rsplit(":", 1)
        self._upstream = (host, int(upstream_port))
        self._port = port
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._port)
        return self

    @property
    def address(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        for end in (writer, up_writer):
            end.close()
            self._writers.discard(end)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()

    def cut(self) -> None:
        """Drops every open connection, both ways, without a goodbye."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_a_chat_resumes_by_sequence_after_its_connection_is_cut(stack: Stack) -> None:
    document = bundle({"reply": "one two three four five", "delay_ms": 50})
    async with (
        CuttingProxy(stack.session_app.server.address) as proxy,
        client_of(stack, session_target=proxy.address) as client,
    ):
        config = await client.configs.create("slow", document)
        session = await client.sessions.create(config.config_id, start=True)
        events: list[Event] = []
        async for event in client.sessions.chat(session.session_id, "Count"):
            events.append(event)
            if event.kind == "content_delta" and proxy.connections == 1:
                # Mid-reply, once: the rest must come over a new connection.
                proxy.cut()
        assert proxy.connections >= 2
        assert_gap_free(events)
        assert len({e.sequence for e in events}) == len(events)
        assert {e.turn_id for e in events} == {events[0].turn_id}
        assert events[0].kind == "turn_started"
        assert events[-1].kind == "turn_completed"
        assert [e.kind for e in events].count("turn_completed") == 1
        assert text_of(events) == "one two three four five"
        transcript = await client.sessions.messages(session.session_id)
        assert [m.content for m in transcript] == ["Count", "one two three four five"]


async def test_a_stream_resumes_by_sequence_after_its_connection_is_cut(stack: Stack) -> None:
    document = bundle({"reply": "one two three four five", "delay_ms": 50})
    async with (
        CuttingProxy(stack.session_app.server.address) as proxy,
        client_of(stack, session_target=proxy.address) as client,
    ):
        config = await client.configs.create("slow", document)
        session = await client.sessions.create(config.config_id, start=True)
        turn = client.sessions.send(session.session_id, "Count")
        first = await anext(turn)
        assert first.kind == "turn_started"
        events = [first]
        async for event in client.sessions.stream(session.session_id, after_sequence=1):
            events.append(event)
            if event.kind == "content_delta" and proxy.connections == 1:
                proxy.cut()
            if event.terminal:
                break
        await turn.aclose()
        assert proxy.connections >= 2
        assert_gap_free(events)
        assert events[-1].kind == "turn_completed"
        assert text_of(events) == "one two three four five"


async def test_errors_of_session_calls_are_typed(stack: Stack) -> None:
    async with client_of(stack) as client:
        with pytest.raises(NotFound) as missing:
            await client.sessions.create("no-such-config", start=True)
        assert missing.value.code == "NOT_FOUND"
        config = await client.configs.create("idle", bundle({"reply": "hi"}))
        session = await client.sessions.create(config.config_id)
        assert session.status == "CREATED"
        with pytest.raises(FailedPrecondition) as refused:
            await client.sessions.complete(session.session_id)
        assert refused.value.reason == "ILLEGAL_TRANSITION"


async def test_a_failed_turn_ends_the_chat_with_its_error(stack: Stack) -> None:
    script = [
        {"reply": "Partial answer", "fail": {"code": "PROVIDER_UNAVAILABLE", "message": "down"}}
    ]
    async with client_of(stack) as client:
        config = await client.configs.create("failing", bundle({"script": script}))
        session = await client.sessions.create(config.config_id, start=True)
        result = await client.sessions.reply(session.session_id, "hi")
    assert result.outcome == "FAILED"
    assert result.text == "Partial answer"
    failed = result.events[-1]
    assert (failed.kind, failed.reason, failed.error_message) == (
        "turn_failed",
        "PROVIDER_UNAVAILABLE",
        "down",
    )
    assert failed.error is not None
    assert (failed.error.reason, failed.error.message) == ("PROVIDER_UNAVAILABLE", "down")


async def test_cancel_ends_a_stalled_turn(stack: Stack) -> None:
    async with client_of(stack) as client:
        config = await client.configs.create("stall", bundle({"script": [{"stall": True}]}))
        session = await client.sessions.create(config.config_id, start=True)
        chat = client.sessions.chat(session.session_id, "wait")
        started = await anext(chat)
        assert await client.sessions.cancel(session.session_id) == started.turn_id
        rest = [e async for e in chat]
        assert rest[-1].kind == "turn_cancelled"
        assert (await client.sessions.get(session.session_id)).active_turn_id == ""


async def test_a_create_is_retried_across_an_outage_and_writes_once(stack: Stack) -> None:
    # A port nothing listens on yet: the first attempts fail with UNAVAILABLE.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with AsyncTandem(f"127.0.0.1:{port}", retries=8) as client:
        creating = asyncio.create_task(client.configs.create("late", bundle({"reply": "hi"})))
        await asyncio.sleep(0.5)
        assert not creating.done()
        async with CuttingProxy(stack.config_app.server.address, port):
            made = await asyncio.wait_for(creating, 30)
    async with client_of(stack) as direct:
        listed = await direct.configs.list(filter='name = "late"')
    assert [c.config_id for c in listed] == [made.config_id]


async def test_a_call_that_never_reaches_a_server_raises_unavailable(stack: Stack) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with AsyncTandem(f"127.0.0.1:{port}", retries=1) as client:
        with pytest.raises(Unavailable) as unreachable:
            await client.configs.get("anything")
    assert unreachable.value.code == "UNAVAILABLE"


def close_with_an_open_stream(config_target: str, session_target: str) -> list[str]:
    client = Tandem(config_target, session_target=session_target)
    config = client.configs.create("follow", bundle({"reply": "hi"}))
    session = client.sessions.create(config.config_id, start=True)
    client.sessions.reply(session.session_id, "Hello")
    following = client.sessions.stream(session.session_id, follow=True)
    first = next(following)
    # Closing the client ends the stream it still follows.
    client.close()
    with pytest.raises(RuntimeError):
        client.sessions.get(session.session_id)
    return [first.kind, *(e.kind for e in following)]


async def test_the_blocking_client_closes_with_a_stream_open(stack: Stack) -> None:
    kinds = await asyncio.to_thread(
        close_with_an_open_stream,
        stack.config_app.server.address,
        stack.session_app.server.address,
    )
    assert kinds == ["turn_started"]


async def test_in_place_edits_the_change_stream_and_appended_messages(stack: Stack) -> None:
    async with client_of(stack) as client:
        made = await client.configs.create("edits", bundle({"reply": "hi"}))
        with_tool = await client.configs.add_tool(
            made.config_id, "tool-web", config={"timeout": 30}, etag=made.etag
        )
        assert with_tool.revision == 2
        assert with_tool.summary.tools == ["tool-web"]
        assert "timeout: 30" in with_tool.yaml_content
        without = await client.configs.remove_tool(made.config_id, "tool-web", etag=with_tool.etag)
        assert (without.revision, without.summary.tools) == (3, [])
        with pytest.raises(Aborted):
            await client.configs.add_include(made.config_id, "other", etag=made.etag)

        changes = client.configs.watch(after_sequence=1)
        replayed = [await anext(changes), await anext(changes)]
        await changes.aclose()
        assert [(c.sequence, c.type, c.revision) for c in replayed] == [
            (2, "UPDATED", 2),
            (3, "UPDATED", 3),
        ]
        assert {c.config_id for c in replayed} == {made.config_id}

        session = await client.sessions.create(made.config_id, start=True)
        appended = await client.sessions.append_message(session.session_id, "a note")
        assert (appended.role, appended.content, appended.sequence) == ("USER", "a note", 1)
        assert [m.content for m in await client.sessions.messages(session.session_id)] == ["a note"]

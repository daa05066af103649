"""Tandem: the synchronous client, the asyncio client run on a private event loop thread.

Every method blocks until its call finishes; event streams become plain iterators. Reads no
config keys: everything comes from the arguments.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tandem_client.client import AsyncTandem
from tandem_client.models import (
    ApprovalDecision,
    ChatResult,
    Config,
    ConfigChange,
    Event,
    ImportResult,
    Message,
    Page,
    PrepareResult,
    Session,
    ValidationResult,
)

R = TypeVar("R")
T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread, for the async client's calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="tandem-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        future: Future[R] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            # Ctrl-C in the caller's thread: stop the call the loop is running for it.
            future.cancel()
            raise

    def stop(self) -> None:
        # Async generators a caller abandoned are finalised on their own loop, not leaked.
        asyncio.run_coroutine_threadsafe(self.loop.shutdown_asyncgens(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class BlockingIterator(Iterator[T]):
    """A blocking iterator over an async event stream; `close()` stops the stream early."""

    def __init__(self, loop: _LoopThread, stream: AsyncIterator[T]) -> None:
        self._loop = loop
        self._stream = stream
        self._done = False

    def __iter__(self) -> BlockingIterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration

        async def step() -> tuple[bool, T | None]:
            try:
                return True, await anext(self._stream)
            except StopAsyncIteration:
                return False, None

        more, item = self._loop.run(step())
        if not more:
            self._done = True
            raise StopIteration
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Ends the stream (and its call) if it is still open."""
        if self._done:
            return
        self._done = True
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            self._loop.run(closer())

    def __enter__(self) -> BlockingIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Configs:
    """ConfigService calls, blocking: `client.configs`. See AsyncConfigs for each call."""

    def __init__(self, client: Tandem) -> None:
        self._c = client

    def create(
        self,
        name: str,
        yaml_content: str,
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        config_id: str = "",
        request_id: str | None = None,
        validate_only: bool = False,
    ) -> Config:
        """Stores a new config; a request_id is generated so retries are safe."""
        return self._c._run(
            self._c._async.configs.create(
                name,
                yaml_content,
                description=description,
                tags=tags,
                config_id=config_id,
                request_id=request_id,
                validate_only=validate_only,
            )
        )

    def get(self, config: str, *, revision: int = 0) -> Config:
        """A config by id or name; revision 0 is the latest."""
        return self._c._run(self._c._async.configs.get(config, revision=revision))

    def list(
        self, *, filter: str = "", page_size: int = 0, page_token: str = "", full: bool = False
    ) -> Page[Config]:
        """One page of configs."""
        return self._c._run(
            self._c._async.configs.list(
                filter=filter, page_size=page_size, page_token=page_token, full=full
            )
        )

    def iterate(
        self, *, filter: str = "", page_size: int = 0, full: bool = False
    ) -> BlockingIterator[Config]:
        """Every config matching filter, page after page."""
        return self._c._iterate(
            self._c._async.configs.iterate(filter=filter, page_size=page_size, full=full)
        )

    def update(
        self,
        config_id: str,
        *,
        yaml_content: str | None = None,
        name: str | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        etag: str = "",
        validate_only: bool = False,
    ) -> Config:
        """Changes the given fields; with etag, only if nobody changed the config since."""
        return self._c._run(
            self._c._async.configs.update(
                config_id,
                yaml_content=yaml_content,
                name=name,
                description=description,
                tags=tags,
                etag=etag,
                validate_only=validate_only,
            )
        )

    def delete(self, config_id: str, *, etag: str = "") -> None:
        """Deletes a config."""
        self._c._run(self._c._async.configs.delete(config_id, etag=etag))

    def validate(self, yaml_content: str) -> ValidationResult:
        """Checks a document without storing it."""
        return self._c._run(self._c._async.configs.validate(yaml_content))

    def revisions(
        self, config_id: str, *, page_size: int = 0, page_token: str = "", full: bool = False
    ) -> Page[Config]:
        """One page of a config's revisions, newest first."""
        return self._c._run(
            self._c._async.configs.revisions(
                config_id, page_size=page_size, page_token=page_token, full=full
            )
        )

    def rollback(self, config_id: str, revision: int, *, etag: str = "") -> Config:
        """Makes a new revision whose content equals revision's."""
        return self._c._run(self._c._async.configs.rollback(config_id, revision, etag=etag))

    def import_bundle(
        self,
        files: Mapping[str, bytes],
        *,
        source_uri: str = "",
        request_id: str | None = None,
        validate_only: bool = False,
    ) -> ImportResult:
        """Stores a bundle package, all or nothing; retries are safe."""
        return self._c._run(
            self._c._async.configs.import_bundle(
                files, source_uri=source_uri, request_id=request_id, validate_only=validate_only
            )
        )

    def add_tool(
        self,
        config_id: str,
        module: str,
        *,
        source: str = "",
        config: Mapping[str, Any] | None = None,
        etag: str = "",
    ) -> Config:
        """Adds a tool in place."""
        return self._c._run(
            self._c._async.configs.add_tool(
                config_id, module, source=source, config=config, etag=etag
            )
        )

    def add_provider(
        self,
        config_id: str,
        module: str,
        *,
        source: str = "",
        config: Mapping[str, Any] | None = None,
        etag: str = "",
    ) -> Config:
        """Adds a provider in place."""
        return self._c._run(
            self._c._async.configs.add_provider(
                config_id, module, source=source, config=config, etag=etag
            )
        )

    def add_include(self, config_id: str, bundle: str, *, etag: str = "") -> Config:
        """Adds an included bundle in place."""
        return self._c._run(self._c._async.configs.add_include(config_id, bundle, etag=etag))

    def remove_tool(self, config_id: str, module: str, *, etag: str = "") -> Config:
        """Removes a tool in place."""
        return self._c._run(self._c._async.configs.remove_tool(config_id, module, etag=etag))

    def remove_provider(self, config_id: str, module: str, *, etag: str = "") -> Config:
        """Removes a provider in place."""
        return self._c._run(self._c._async.configs.remove_provider(config_id, module, etag=etag))

    def remove_include(self, config_id: str, bundle: str, *, etag: str = "") -> Config:
        """Removes an included bundle in place."""
        return self._c._run(self._c._async.configs.remove_include(config_id, bundle, etag=etag))

    def watch(self, *, after_sequence: int = 0) -> BlockingIterator[ConfigChange]:
        """Config changes after after_sequence, following new ones until closed."""
        return self._c._iterate(self._c._async.configs.watch(after_sequence=after_sequence))


class Sessions:
    """SessionService calls, blocking: `client.sessions`. See AsyncSessions for each call."""

    def __init__(self, client: Tandem) -> None:
        self._c = client

    def create(
        self,
        config_id: str,
        *,
        config_revision: int = 0,
        session_id: str = "",
        tags: Mapping[str, str] | None = None,
        display_name: str = "",
        start: bool = False,
        request_id: str | None = None,
    ) -> Session:
        """Creates a session; a request_id is generated so retries are safe."""
        return self._c._run(
            self._c._async.sessions.create(
                config_id,
                config_revision=config_revision,
                session_id=session_id,
                tags=tags,
                display_name=display_name,
                start=start,
                request_id=request_id,
            )
        )

    def get(self, session_id: str) -> Session:
        """A session."""
        return self._c._run(self._c._async.sessions.get(session_id))

    def list(self, *, filter: str = "", page_size: int = 0, page_token: str = "") -> Page[Session]:
        """One page of sessions."""
        return self._c._run(
            self._c._async.sessions.list(filter=filter, page_size=page_size, page_token=page_token)
        )

    def iterate(self, *, filter: str = "", page_size: int = 0) -> BlockingIterator[Session]:
        """Every session matching filter, page after page."""
        return self._c._iterate(self._c._async.sessions.iterate(filter=filter, page_size=page_size))

    def delete(self, session_id: str) -> None:
        """Deletes a session."""
        self._c._run(self._c._async.sessions.delete(session_id))

    def start(self, session_id: str) -> Session:
        """CREATED -> ACTIVE."""
        return self._c._run(self._c._async.sessions.start(session_id))

    def complete(self, session_id: str) -> Session:
        """ACTIVE -> COMPLETED."""
        return self._c._run(self._c._async.sessions.complete(session_id))

    def fail(self, session_id: str, error_message: str = "") -> Session:
        """CREATED or ACTIVE -> FAILED."""
        return self._c._run(self._c._async.sessions.fail(session_id, error_message))

    def terminate(self, session_id: str) -> Session:
        """CREATED or ACTIVE -> TERMINATED."""
        return self._c._run(self._c._async.sessions.terminate(session_id))

    def resume(self, session_id: str, *, upgrade_config: bool = False) -> Session:
        """COMPLETED or TERMINATED -> ACTIVE."""
        return self._c._run(
            self._c._async.sessions.resume(session_id, upgrade_config=upgrade_config)
        )

    def fork(
        self,
        session_id: str,
        *,
        at_sequence: int = 0,
        new_session_id: str = "",
        tags: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> Session:
        """A new session from this one's transcript up to at_sequence (0: the end)."""
        return self._c._run(
            self._c._async.sessions.fork(
                session_id,
                at_sequence=at_sequence,
                new_session_id=new_session_id,
                tags=tags,
                request_id=request_id,
            )
        )

    def rewind(self, session_id: str, to_message_id: str, *, etag: str = "") -> Session:
        """Removes the messages after to_message_id from what later turns see."""
        return self._c._run(self._c._async.sessions.rewind(session_id, to_message_id, etag=etag))

    def append_message(self, session_id: str, content: str, *, role: str = "USER") -> Message:
        """Adds a message to the transcript without running a turn."""
        return self._c._run(self._c._async.sessions.append_message(session_id, content, role=role))

    def messages(
        self, session_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> Page[Message]:
        """One page of the transcript, oldest first."""
        return self._c._run(
            self._c._async.sessions.messages(session_id, page_size=page_size, page_token=page_token)
        )

    def chat(
        self,
        session_id: str,
        content: str,
        *,
        request_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> BlockingIterator[Event]:
        """Runs a turn and yields its events; resumes by sequence after a dropped connection."""
        return self._c._iterate(
            self._c._async.sessions.chat(
                session_id, content, request_id=request_id, context=context
            )
        )

    def chat_new(
        self,
        config_id: str,
        content: str,
        *,
        config_revision: int = 0,
        request_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> BlockingIterator[Event]:
        """One-call chat: a new session on the config ("session_created" first), its turn."""
        return self._c._iterate(
            self._c._async.sessions.chat_new(
                config_id,
                content,
                config_revision=config_revision,
                request_id=request_id,
                context=context,
            )
        )

    def send(
        self,
        session_id: str,
        content: str,
        *,
        request_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> BlockingIterator[Event]:
        """SendMessage's events as one stream, without resuming."""
        return self._c._iterate(
            self._c._async.sessions.send(
                session_id, content, request_id=request_id, context=context
            )
        )

    def reply(
        self,
        session_id: str,
        content: str,
        *,
        request_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """Runs a turn to its end and returns its events and reply text."""
        return self._c._run(
            self._c._async.sessions.reply(
                session_id, content, request_id=request_id, context=context
            )
        )

    def stream(
        self, session_id: str, *, after_sequence: int = 0, follow: bool = False
    ) -> BlockingIterator[Event]:
        """The session's events after after_sequence, resumed after a drop."""
        return self._c._iterate(
            self._c._async.sessions.stream(session_id, after_sequence=after_sequence, follow=follow)
        )

    def cancel(self, session_id: str, *, turn_id: str = "") -> str:
        """Cancels the running turn; returns its id."""
        return self._c._run(self._c._async.sessions.cancel(session_id, turn_id=turn_id))

    def decide_approval(
        self, session_id: str, tool_call_id: str, approve: bool, reason: str = ""
    ) -> ApprovalDecision:
        """Approves or denies a tool call its turn paused for."""
        return self._c._run(
            self._c._async.sessions.decide_approval(session_id, tool_call_id, approve, reason)
        )

    def prepare(self, config_id: str, *, revision: int = 0) -> PrepareResult:
        """What a session prepared from the config would get."""
        return self._c._run(self._c._async.sessions.prepare(config_id, revision=revision))


class Tandem:
    """The blocking Tandem client; same arguments and calls as AsyncTandem.

    Use `with Tandem(...) as client:` or call `close()`, which also ends open streams.
    """

    def __init__(
        self,
        target: str,
        *,
        session_target: str | None = None,
        api_key: str | None = None,
        tls: bool = False,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        timeout: float | None = 30.0,
        retries: int = 3,
    ) -> None:
        self._async = AsyncTandem(
            target,
            session_target=session_target,
            api_key=api_key,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            timeout=timeout,
            retries=retries,
        )
        self._loop = _LoopThread()
        self._streams: list[BlockingIterator[Any]] = []
        self._closed = False
        self.configs = Configs(self)
        self.sessions = Sessions(self)

    def _run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        if self._closed:
            coroutine.close()
            raise RuntimeError("the Tandem client is closed")
        return self._loop.run(coroutine)

    def _iterate(self, stream: AsyncIterator[T]) -> BlockingIterator[T]:
        iterator = BlockingIterator(self._loop, stream)
        self._streams = [s for s in self._streams if not s._done]
        self._streams.append(iterator)
        return iterator

    def close(self) -> None:
        """Ends open streams, closes the channels and stops the loop thread."""
        if self._closed:
            return
        for stream in self._streams:
            stream.close()
        self._closed = True
        self._loop.run(self._async.close())
        self._loop.stop()

    def __enter__(self) -> Tandem:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["BlockingIterator", "Configs", "Sessions", "Tandem"]

"""AsyncTandem: the asyncio client of ConfigService (`.configs`) and SessionService (`.sessions`).

Every call raises a TandemError subclass on failure. Reads (and writes that carry a
request_id, which this client generates) are retried on UNAVAILABLE with exponential backoff,
honouring the server's RetryInfo. Reads no config keys: everything comes from the arguments.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from google.protobuf import field_mask_pb2, struct_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from tandem_client import convert
from tandem_client.errors import InvalidArgument, NotFound
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
from tandem_client.streams import chat_events, config_changes, if_busy_value, session_events
from tandem_client.transport import Metadata, Transport, new_request_id

_VIEW = {
    False: config_pb2.ConfigView.CONFIG_VIEW_UNSPECIFIED,
    True: config_pb2.ConfigView.CONFIG_VIEW_FULL,
}


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AsyncConfigs:
    """ConfigService calls: `client.configs`."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def create(
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
        """Stores a new config (CreateConfig).

        A request_id is generated when none is given, so a retry after UNAVAILABLE returns
        the first write's result instead of creating a second config.
        """
        request = config_service_pb2.CreateConfigRequest(
            config=config_pb2.Config(
                name=name, yaml_content=yaml_content, description=description, tags=tags or {}
            ),
            config_id=config_id,
            request_id=request_id or new_request_id(),
            validate_only=validate_only,
        )

        async def call(deadline: float | None, metadata: Metadata) -> config_pb2.Config:
            return await self._t.configs.CreateConfig(request, timeout=deadline, metadata=metadata)

        return convert.config(await self._t.unary(call, retry=True))

    async def get(self, config: str, *, revision: int = 0) -> Config:
        """A config by id, or else by name (GetConfig); revision 0 is the latest."""
        request = config_service_pb2.GetConfigRequest(config_id=config, revision=revision)

        async def call(deadline: float | None, metadata: Metadata) -> config_pb2.Config:
            return await self._t.configs.GetConfig(request, timeout=deadline, metadata=metadata)

        try:
            return convert.config(await self._t.unary(call, retry=True))
        except (NotFound, InvalidArgument):
            # A name ("team:notes/guide") may not even be a well-formed id.
            named = await self.list(filter=f"name = {_quoted(config)}", page_size=1)
            if not named.items:
                raise
            return await self.get(named.items[0].config_id, revision=revision)

    async def list(
        self, *, filter: str = "", page_size: int = 0, page_token: str = "", full: bool = False
    ) -> Page[Config]:
        """One page of configs (ListConfigs); full=True includes yaml_content."""
        request = config_service_pb2.ListConfigsRequest(
            filter=filter, page_size=page_size, page_token=page_token, view=_VIEW[full]
        )

        async def call(
            deadline: float | None, metadata: Metadata
        ) -> config_service_pb2.ListConfigsResponse:
            return await self._t.configs.ListConfigs(request, timeout=deadline, metadata=metadata)

        response = await self._t.unary(call, retry=True)
        return Page(
            [convert.config(c) for c in response.configs],
            response.next_page_token,
            response.total_size,
        )

    async def iterate(
        self, *, filter: str = "", page_size: int = 0, full: bool = False
    ) -> AsyncIterator[Config]:
        """Every config matching filter, fetching page after page."""
        token = ""
        while True:
            page = await self.list(filter=filter, page_size=page_size, page_token=token, full=full)
            for item in page.items:
                yield item
            token = page.next_page_token
            if not token:
                return

    async def update(
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
        """Changes the given fields (UpdateConfig); with etag, only if nobody changed it since.

        Not retried: a write without a request_id could apply twice.
        """
        config = config_pb2.Config(config_id=config_id, etag=etag)
        paths = []
        if yaml_content is not None:
            config.yaml_content = yaml_content
            paths.append("yaml_content")
        if name is not None:
            config.name = name
            paths.append("name")
        if description is not None:
            config.description = description
            paths.append("description")
        if tags is not None:
            config.tags.update(tags)
            paths.append("tags")
        request = config_service_pb2.UpdateConfigRequest(
            config=config,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
            validate_only=validate_only,
        )

        async def call(deadline: float | None, metadata: Metadata) -> config_pb2.Config:
            return await self._t.configs.UpdateConfig(request, timeout=deadline, metadata=metadata)

        return convert.config(await self._t.unary(call, retry=False))

    async def delete(self, config_id: str, *, etag: str = "") -> None:
        """Deletes a config (DeleteConfig); with etag, only if nobody changed it since."""
        request = config_service_pb2.DeleteConfigRequest(config_id=config_id, etag=etag)

        async def call(deadline: float | None, metadata: Metadata) -> object:
            return await self._t.configs.DeleteConfig(request, timeout=deadline, metadata=metadata)

        await self._t.unary(call, retry=False)

    async def validate(self, yaml_content: str) -> ValidationResult:
        """Checks a document without storing it (ValidateConfig)."""
        request = config_service_pb2.ValidateConfigRequest(yaml_content=yaml_content)

        async def call(
            deadline: float | None, metadata: Metadata
        ) -> config_service_pb2.ValidateConfigResponse:
            return await self._t.configs.ValidateConfig(
                request, timeout=deadline, metadata=metadata
            )

        return convert.validation(await self._t.unary(call, retry=True))

    async def revisions(
        self, config_id: str, *, page_size: int = 0, page_token: str = "", full: bool = False
    ) -> Page[Config]:
        """One page of a config's revisions, newest first (ListConfigRevisions)."""
        request = config_service_pb2.ListConfigRevisionsRequest(
            config_id=config_id, page_size=page_size, page_token=page_token, view=_VIEW[full]
        )

        async def call(
            deadline: float | None, metadata: Metadata
        ) -> config_service_pb2.ListConfigRevisionsResponse:
            return await self._t.configs.ListConfigRevisions(
                request, timeout=deadline, metadata=metadata
            )

        response = await self._t.unary(call, retry=True)
        return Page(
            [convert.config(c) for c in response.revisions],
            response.next_page_token,
            response.total_size,
        )

    async def rollback(self, config_id: str, revision: int, *, etag: str = "") -> Config:
        """Makes a new revision whose content equals revision's (RollbackConfig)."""
        request = config_service_pb2.RollbackConfigRequest(
            config_id=config_id, revision=revision, etag=etag
        )

        async def call(deadline: float | None, metadata: Metadata) -> config_pb2.Config:
            return await self._t.configs.RollbackConfig(
                request, timeout=deadline, metadata=metadata
            )

        return convert.config(await self._t.unary(call, retry=False))

    async def import_bundle(
        self,
        files: Mapping[str, bytes],
        *,
        source_uri: str = "",
        request_id: str | None = None,
        validate_only: bool = False,
    ) -> ImportResult:
        """Stores a bundle package, all or nothing (ImportBundle).

        files maps each path relative to the package root ("bundle.md", "agents/x.md") to its
        bytes. A request_id is generated when none is given, so retries are safe.
        """
        request = config_service_pb2.ImportBundleRequest(
            files=[
                config_service_pb2.BundleFile(path=path, content=content)
                for path, content in files.items()
            ],
            source_uri=source_uri,
            request_id=request_id or new_request_id(),
            validate_only=validate_only,
        )

        async def call(
            deadline: float | None, metadata: Metadata
        ) -> config_service_pb2.ImportBundleResponse:
            return await self._t.configs.ImportBundle(request, timeout=deadline, metadata=metadata)

        return convert.imported(await self._t.unary(call, retry=True))

    async def _edit(self, method: str, request: Any) -> Config:
        async def call(deadline: float | None, metadata: Metadata) -> Any:
            stub_method = getattr(self._t.configs, method)
            return await stub_method(request, timeout=deadline, metadata=metadata)

        # Not retried: a second AddTool would merge twice into a newer revision.
        return convert.config(await self._t.unary(call, retry=False))

    async def add_tool(
        self,
        config_id: str,
        module: str,
        *,
        source: str = "",
        config: Mapping[str, Any] | None = None,
        etag: str = "",
    ) -> Config:
        """Adds a tool in place (AddTool); comments and key order survive."""
        return await self._edit(
            "AddTool",
            config_service_pb2.AddToolRequest(
                config_id=config_id,
                module=module,
                source=source,
                config=_struct(config) if config is not None else None,
                etag=etag,
            ),
        )

    async def add_provider(
        self,
        config_id: str,
        module: str,
        *,
        source: str = "",
        config: Mapping[str, Any] | None = None,
        etag: str = "",
    ) -> Config:
        """Adds a provider in place (AddProvider)."""
        return await self._edit(
            "AddProvider",
            config_service_pb2.AddProviderRequest(
                config_id=config_id,
                module=module,
                source=source,
                config=_struct(config) if config is not None else None,
                etag=etag,
            ),
        )

    async def add_include(self, config_id: str, bundle: str, *, etag: str = "") -> Config:
        """Adds an included bundle in place (AddInclude)."""
        return await self._edit(
            "AddInclude",
            config_service_pb2.AddIncludeRequest(config_id=config_id, bundle=bundle, etag=etag),
        )

    async def remove_tool(self, config_id: str, module: str, *, etag: str = "") -> Config:
        """Removes a tool in place (RemoveTool)."""
        return await self._edit(
            "RemoveTool",
            config_service_pb2.RemoveToolRequest(config_id=config_id, module=module, etag=etag),
        )

    async def remove_provider(self, config_id: str, module: str, *, etag: str = "") -> Config:
        """Removes a provider in place (RemoveProvider)."""
        return await self._edit(
            "RemoveProvider",
            config_service_pb2.RemoveProviderRequest(config_id=config_id, module=module, etag=etag),
        )

    async def remove_include(self, config_id: str, bundle: str, *, etag: str = "") -> Config:
        """Removes an included bundle in place (RemoveInclude)."""
        return await self._edit(
            "RemoveInclude",
            config_service_pb2.RemoveIncludeRequest(config_id=config_id, bundle=bundle, etag=etag),
        )

    def watch(self, *, after_sequence: int = 0) -> AsyncGenerator[ConfigChange, None]:
        """Config changes after after_sequence (WatchConfigs), following new ones until closed;
        resumed after a drop from the last change yielded."""
        return config_changes(self._t, after_sequence)


class AsyncSessions:
    """SessionService calls: `client.sessions`."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def _session(self, method: str, request: Any, *, retry: bool = False) -> Session:
        async def call(deadline: float | None, metadata: Metadata) -> Any:
            stub_method = getattr(self._t.sessions, method)
            return await stub_method(request, timeout=deadline, metadata=metadata)

        return convert.session(await self._t.unary(call, retry=retry))

    async def create(
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
        """Creates a session on a config revision (CreateSession); start=True makes it ACTIVE.

        A request_id is generated when none is given, so a retry after UNAVAILABLE returns
        the first session instead of creating another.
        """
        request = session_service_pb2.CreateSessionRequest(
            config_id=config_id,
            config_revision=config_revision,
            session_id=session_id,
            tags=tags or {},
            display_name=display_name,
            start=start,
            request_id=request_id or new_request_id(),
        )
        return await self._session("CreateSession", request, retry=True)

    async def get(self, session_id: str) -> Session:
        """A session (GetSession)."""
        request = session_service_pb2.GetSessionRequest(session_id=session_id)
        return await self._session("GetSession", request, retry=True)

    async def list(
        self, *, filter: str = "", page_size: int = 0, page_token: str = ""
    ) -> Page[Session]:
        """One page of sessions (ListSessions), e.g. filter='status = ACTIVE'."""
        request = session_service_pb2.ListSessionsRequest(
            filter=filter, page_size=page_size, page_token=page_token
        )

        async def call(
            deadline: float | None, metadata: Metadata
        ) -> session_service_pb2.ListSessionsResponse:
            return await self._t.sessions.ListSessions(request, timeout=deadline, metadata=metadata)

        response = await self._t.unary(call, retry=True)
        return Page(
            [convert.session(s) for s in response.sessions],
            response.next_page_token,
            response.total_size,
        )

    async def iterate(self, *, filter: str = "", page_size: int = 0) -> AsyncIterator[Session]:
        """Every session matching filter, fetching page after page."""
        token = ""
        while True:
            page = await self.list(filter=filter, page_size=page_size, page_token=token)
            for item in page.items:
                yield item
            token = page.next_page_token
            if not token:
                return

    async def delete(self, session_id: str) -> None:
        """Deletes a session (DeleteSession)."""
        request = session_service_pb2.DeleteSessionRequest(session_id=session_id)

        async def call(deadline: float | None, metadata: Metadata) -> object:
            return await self._t.sessions.DeleteSession(
                request, timeout=deadline, metadata=metadata
            )

        await self._t.unary(call, retry=False)

    async def start(self, session_id: str) -> Session:
        """CREATED -> ACTIVE (StartSession)."""
        request = session_service_pb2.StartSessionRequest(session_id=session_id)
        return await self._session("StartSession", request)

    async def complete(self, session_id: str) -> Session:
        """ACTIVE -> COMPLETED (CompleteSession)."""
        request = session_service_pb2.CompleteSessionRequest(session_id=session_id)
        return await self._session("CompleteSession", request)

    async def fail(self, session_id: str, error_message: str = "") -> Session:
        """CREATED or ACTIVE -> FAILED (FailSession)."""
        request = session_service_pb2.FailSessionRequest(
            session_id=session_id, error_message=error_message
        )
        return await self._session("FailSession", request)

    async def terminate(self, session_id: str) -> Session:
        """CREATED or ACTIVE -> TERMINATED (TerminateSession)."""
        request = session_service_pb2.TerminateSessionRequest(session_id=session_id)
        return await self._session("TerminateSession", request)

    async def resume(self, session_id: str, *, upgrade_config: bool = False) -> Session:
        """COMPLETED or TERMINATED -> ACTIVE (ResumeSession)."""
        request = session_service_pb2.ResumeSessionRequest(
            session_id=session_id, upgrade_config=upgrade_config
        )
        return await self._session("ResumeSession", request)

    async def fork(
        self,
        session_id: str,
        *,
        at_sequence: int = 0,
        new_session_id: str = "",
        tags: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> Session:
        """A new ACTIVE session with the transcript up to at_sequence (0: the end), the same
        config revision and a copy of the files (ForkSession).

        A request_id is generated when none is given, so a retry returns the first fork.
        """
        request = session_service_pb2.ForkSessionRequest(
            session_id=session_id,
            at_sequence=at_sequence,
            new_session_id=new_session_id,
            tags=tags or {},
            request_id=request_id or new_request_id(),
        )
        return await self._session("ForkSession", request, retry=True)

    async def rewind(self, session_id: str, to_message_id: str, *, etag: str = "") -> Session:
        """Removes the messages after to_message_id from what later turns see (RewindSession).

        Not retried: a repeat would find the session changed (give the etag to be sure).
        """
        request = session_service_pb2.RewindSessionRequest(
            session_id=session_id, to_message_id=to_message_id, etag=etag
        )
        return await self._session("RewindSession", request)

    async def append_message(self, session_id: str, content: str, *, role: str = "USER") -> Message:
        """Adds a message to the transcript without running a turn (AppendMessage).

        Not retried: the message could be added twice.
        """
        request = session_service_pb2.AppendMessageRequest(
            session_id=session_id,
            message=session_pb2.Message(
                role=session_pb2.Role.Value(f"ROLE_{role.upper()}"), content=content
            ),
        )

        async def call(deadline: float | None, metadata: Metadata) -> session_pb2.Message:
            return await self._t.sessions.AppendMessage(
                request, timeout=deadline, metadata=metadata
            )

        return convert.message(await self._t.unary(call, retry=False))

    async def messages(
        self, session_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> Page[Message]:
        """One page of the transcript, oldest first (ListMessages)."""
        request = session_service_pb2.ListMessagesRequest(
            session_id=session_id, page_size=page_size, page_token=page_token
        )

        async def call(
            deadline: float | None, metadata: Metadata
        ) -> session_service_pb2.ListMessagesResponse:
            return await self._t.sessions.ListMessages(request, timeout=deadline, metadata=metadata)

        response = await self._t.unary(call, retry=True)
        return Page([convert.message(m) for m in response.messages], response.next_page_token)

    def chat(
        self,
        session_id: str,
        content: str,
        *,
        request_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        if_busy: str = "reject",
    ) -> AsyncGenerator[Event, None]:
        """Runs a turn (SendMessage) and yields its events through its terminal event.

        After a dropped connection or a draining server it resumes on its own from the last
        sequence it yielded, so no event is lost or repeated. A request_id is generated when
        none is given: a retry before the first event re-attaches to the same turn. if_busy
        ("reject", "enqueue", "interrupt", "rollback") says what happens while another turn
        of the session runs.
        """
        if_busy_value(if_busy)  # an unknown strategy fails here, not at the first event
        return chat_events(
            self._t,
            session_id,
            content,
            request_id or new_request_id(),
            context,
            if_busy=if_busy,
        )

    def chat_new(
        self,
        config_id: str,
        content: str,
        *,
        config_revision: int = 0,
        request_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """One-call chat: makes and starts a session on the config, then runs a turn in it.

        The first event is "session_created", whose `session` is the new session (pinned to
        config_revision, 0 the latest) to continue with chat(); the turn's events follow,
        resumed after a drop as chat() does. A retry with the same request_id makes no
        second session.
        """
        return chat_events(
            self._t,
            "",
            content,
            request_id or new_request_id(),
            context,
            config_id=config_id,
            config_revision=config_revision,
        )

    def send(
        self,
        session_id: str,
        content: str,
        *,
        request_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        if_busy: str = "reject",
    ) -> AsyncGenerator[Event, None]:
        """SendMessage's events as one stream, without resuming: a drop raises Unavailable.

        if_busy as for chat().
        """
        if_busy_value(if_busy)
        return chat_events(
            self._t,
            session_id,
            content,
            request_id or new_request_id(),
            context,
            resume=False,
            if_busy=if_busy,
        )

    async def reply(
        self,
        session_id: str,
        content: str,
        *,
        request_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """Runs a turn to its end (as chat()) and returns its events and reply text."""
        events = [
            event
            async for event in self.chat(
                session_id, content, request_id=request_id, context=context
            )
        ]
        return ChatResult(events[0].turn_id if events else "", events)

    def stream(
        self, session_id: str, *, after_sequence: int = 0, follow: bool = False
    ) -> AsyncGenerator[Event, None]:
        """The session's events after after_sequence (StreamEvents), resumed after a drop.

        Without follow it ends once no turn runs; with follow it runs until closed.
        """
        return session_events(self._t, session_id, after_sequence, follow)

    async def cancel(self, session_id: str, *, turn_id: str = "") -> str:
        """Cancels the running turn (CancelTurn); returns its id."""
        request = session_service_pb2.CancelTurnRequest(session_id=session_id, turn_id=turn_id)

        async def call(
            deadline: float | None, metadata: Metadata
        ) -> session_service_pb2.CancelTurnResponse:
            return await self._t.sessions.CancelTurn(request, timeout=deadline, metadata=metadata)

        return (await self._t.unary(call, retry=False)).turn_id

    async def decide_approval(
        self, session_id: str, tool_call_id: str, approve: bool, reason: str = ""
    ) -> ApprovalDecision:
        """Approves or denies a tool call its turn paused for (DecideApproval)."""
        decision = session_service_pb2.DecideApprovalRequest.Decision
        request = session_service_pb2.DecideApprovalRequest(
            session_id=session_id,
            tool_call_id=tool_call_id,
            decision=decision.DECISION_APPROVE if approve else decision.DECISION_DENY,
            reason=reason,
        )

        async def call(
            deadline: float | None, metadata: Metadata
        ) -> session_service_pb2.DecideApprovalResponse:
            return await self._t.sessions.DecideApproval(
                request, timeout=deadline, metadata=metadata
            )

        return convert.approval(await self._t.unary(call, retry=False))

    async def prepare(self, config_id: str, *, revision: int = 0) -> PrepareResult:
        """What a session prepared from the config would get, without making one."""
        request = session_service_pb2.PrepareConfigRequest(config_id=config_id, revision=revision)

        async def call(
            deadline: float | None, metadata: Metadata
        ) -> session_service_pb2.PrepareConfigResponse:
            return await self._t.sessions.PrepareConfig(
                request, timeout=deadline, metadata=metadata
            )

        return convert.prepared(await self._t.unary(call, retry=True))


class AsyncTandem:
    """The asyncio Tandem client.

    target is ConfigService's address ("host:port"); session_target is SessionService's
    (defaults to target, for both behind one address). api_key is sent as
    `authorization: Bearer <key>`. tls (or any of ca_file, cert_file, key_file) makes the
    channels TLS, with a client certificate when cert_file and key_file are given. timeout
    is each unary call's deadline in seconds; retries bounds the retries of UNAVAILABLE.
    Use `async with AsyncTandem(...) as client:` or call `close()`.
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
        self._transport = Transport(
            target,
            session_target or target,
            api_key=api_key,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            timeout=timeout,
            retries=retries,
        )
        self.configs = AsyncConfigs(self._transport)
        self.sessions = AsyncSessions(self._transport)

    async def close(self) -> None:
        """Closes the channels."""
        await self._transport.close()

    async def __aenter__(self) -> AsyncTandem:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


__all__ = ["AsyncConfigs", "AsyncSessions", "AsyncTandem"]

"""gRPC servicer for tandem.session.v1.SessionService: translation only."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from typing import Any

from google.protobuf import duration_pb2, empty_pb2
from ruamel.yaml import YAML

from session_service.prepare.model import PreparationFailed, PreparedBundle
from session_service.sessions.forks import SessionForks
from session_service.sessions.model import (
    Message,
    Role,
    Session,
    Status,
    ToolCall,
    Transition,
)
from session_service.sessions.service import SessionService
from session_service.turns.chat import Chat
from session_service.turns.model import (
    AgentCompleted,
    AgentStarted,
    ApprovalDecided,
    ApprovalRequested,
    ContentDelta,
    Event,
    EventBody,
    SessionCreated,
    SessionRewound,
    ThinkingDelta,
    ToolCallCompleted,
    ToolCallStarted,
    TurnCancelled,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    Usage,
)
from session_service.turns.queue import IfBusy
from session_service.turns.service import TurnService
from shared._generated.tandem.config.v1 import config_pb2
from shared._generated.tandem.session.v1 import (
    events_pb2,
    session_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)
from shared.errors import FieldViolation, InvalidArgument
from shared.identifiers import MAX_TAGS
from shared.rpc.context import Context
from shared.rpc.convert import struct_to_python, timestamp
from shared.rpc.fields import StructLimits, check_count, check_struct, required
from shared.tenancy import caller_tenant
from shared.visibility import Visibility

SERVICE_NAME: str = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name

_STATUS = {
    Status.CREATED: session_pb2.SESSION_STATUS_CREATED,
    Status.ACTIVE: session_pb2.SESSION_STATUS_ACTIVE,
    Status.COMPLETED: session_pb2.SESSION_STATUS_COMPLETED,
    Status.FAILED: session_pb2.SESSION_STATUS_FAILED,
    Status.TERMINATED: session_pb2.SESSION_STATUS_TERMINATED,
}
_ROLE = {
    Role.USER: session_pb2.ROLE_USER,
    Role.ASSISTANT: session_pb2.ROLE_ASSISTANT,
    Role.TOOL: session_pb2.ROLE_TOOL,
    Role.SYSTEM: session_pb2.ROLE_SYSTEM,
}
_ROLE_FROM_WIRE = {wire: role for role, wire in _ROLE.items()}
# Per-turn key/values, rendered into the prompt: generous for context, small for the loop.
TURN_CONTEXT_LIMITS = StructLimits(max_bytes=64 * 1024, max_entries=4_096, max_depth=16)
MAX_TOOL_CALLS = 128


# The idempotency scope of the sessions one-call SendMessages create: their request_ids are
# SendMessage's, never confused with a CreateSession's that happens to be the same.
def session_pb(session: Session) -> session_pb2.Session:
    """Domain session → wire."""
    wire = session_pb2.Session(
        session_id=session.session_id,
        config_id=session.config_id,
        config_revision=session.config_revision,
        status=_STATUS[session.status],
        error_message=session.error_message,
        message_count=session.message_count,
        last_sequence=session.last_sequence,
        active_turn_id=session.active_turn_id,
        parent_session_id=session.parent_session_id,
        agent=session.agent,
        display_name=session.display_name,
        tags=dict(session.tags),
        create_time=timestamp(session.create_time),
        update_time=timestamp(session.update_time),
        etag=session.etag,
        completion_reason=session.completion_reason,
        queued_turns=session.queued_turns,
        overrides=session.overrides,
        owner=session.owner,
        visibility=_VISIBILITY_PB[session.visibility],
        team=session.team,
    )
    # Set only when there is one: an unset field means no limit (or no deadline).
    if session.ttl_seconds:
        wire.ttl.FromTimedelta(timedelta(seconds=session.ttl_seconds))
    if session.delete_after_seconds:
        wire.delete_after.FromTimedelta(timedelta(seconds=session.delete_after_seconds))
    if session.idle_expire_time is not None:
        wire.expire_time.CopyFrom(timestamp(session.idle_expire_time))
    if session.delete_time is not None:
        wire.delete_time.CopyFrom(timestamp(session.delete_time))
    if session.forked_from_session_id:
        wire.forked_from.session_id = session.forked_from_session_id
        wire.forked_from.sequence = session.forked_from_sequence
    return wire


_VISIBILITY_PB = {
    Visibility.PRIVATE: config_pb2.VISIBILITY_PRIVATE,
    Visibility.TEAM: config_pb2.VISIBILITY_TEAM,
    Visibility.ORG: config_pb2.VISIBILITY_ORG,
}
_VISIBILITY: dict[int, Visibility] = {int(n): v for v, n in _VISIBILITY_PB.items()}


def _visibility(number: int) -> Visibility | None:
    """CreateSessionRequest.visibility; None when unspecified, INVALID_ARGUMENT when unknown."""
    if number == config_pb2.VISIBILITY_UNSPECIFIED:
        return None
    if number not in _VISIBILITY:
        raise InvalidArgument(
            "visibility must be VISIBILITY_PRIVATE, VISIBILITY_TEAM or VISIBILITY_ORG.",
            reason="INVALID_VISIBILITY",
            violations=[FieldViolation("visibility", f"unknown value {number}")],
        )
    return _VISIBILITY[number]


def _seconds(value: duration_pb2.Duration, given: bool) -> float | None:
    """A Duration field of a request in seconds; None when it is not set."""
    return float(value.ToTimedelta().total_seconds()) if given else None


def message_pb(message: Message) -> session_pb2.Message:
    """Domain message → wire."""
    return session_pb2.Message(
        message_id=message.message_id,
        role=_ROLE[message.role],
        content=message.content,
        tool_calls=[
            session_pb2.ToolCall(
                tool_call_id=c.tool_call_id, name=c.name, arguments_json=c.arguments_json
            )
            for c in message.tool_calls
        ],
        tool_call_id=message.tool_call_id,
        sequence=message.sequence,
        create_time=timestamp(message.create_time),
        turn_id=message.turn_id,
    )


# One function per event kind, each filling the SessionEvent oneof field of its kind.


def _turn_started(wire: events_pb2.SessionEvent, body: TurnStarted) -> None:
    wire.turn_started.CopyFrom(
        events_pb2.TurnStarted(
            user_message=message_pb(body.user_message), request_id=body.request_id
        )
    )


def _content_delta(wire: events_pb2.SessionEvent, body: ContentDelta) -> None:
    wire.content_delta.text = body.text


def _thinking_delta(wire: events_pb2.SessionEvent, body: ThinkingDelta) -> None:
    wire.thinking_delta.text = body.text


def _tool_call_started(wire: events_pb2.SessionEvent, body: ToolCallStarted) -> None:
    wire.tool_call_started.CopyFrom(
        events_pb2.ToolCallStarted(
            tool_call_id=body.tool_call_id, name=body.name, arguments_json=body.arguments_json
        )
    )


def _tool_call_completed(wire: events_pb2.SessionEvent, body: ToolCallCompleted) -> None:
    wire.tool_call_completed.CopyFrom(
        events_pb2.ToolCallCompleted(
            tool_call_id=body.tool_call_id, result=body.result, is_error=body.is_error
        )
    )


def _usage(wire: events_pb2.SessionEvent, body: Usage) -> None:
    wire.usage.CopyFrom(
        events_pb2.Usage(
            input_tokens=body.input_tokens,
            output_tokens=body.output_tokens,
            provider=body.provider,
            model=body.model,
        )
    )


def _turn_completed(wire: events_pb2.SessionEvent, body: TurnCompleted) -> None:
    wire.turn_completed.CopyFrom(
        events_pb2.TurnCompleted(stop_reason=body.stop_reason, message=message_pb(body.message))
    )


def _turn_failed(wire: events_pb2.SessionEvent, body: TurnFailed) -> None:
    wire.turn_failed.CopyFrom(events_pb2.TurnFailed(code=body.code, message=body.message))


def _turn_cancelled(wire: events_pb2.SessionEvent, body: TurnCancelled) -> None:
    cancelled = events_pb2.TurnCancelled(reason=body.reason)
    if body.partial_message is not None:
        cancelled.partial_message.CopyFrom(message_pb(body.partial_message))
    wire.turn_cancelled.CopyFrom(cancelled)


def _agent_started(wire: events_pb2.SessionEvent, body: AgentStarted) -> None:
    wire.agent_started.CopyFrom(
        events_pb2.AgentStarted(
            tool_call_id=body.tool_call_id,
            agent=body.agent,
            session_id=body.session_id,
            child_turn_id=body.child_turn_id,
            resumed=body.resumed,
        )
    )


def _agent_completed(wire: events_pb2.SessionEvent, body: AgentCompleted) -> None:
    wire.agent_completed.CopyFrom(
        events_pb2.AgentCompleted(
            tool_call_id=body.tool_call_id,
            agent=body.agent,
            session_id=body.session_id,
            child_turn_id=body.child_turn_id,
            outcome=body.outcome,
            error_message=body.error_message,
        )
    )


def _approval_requested(wire: events_pb2.SessionEvent, body: ApprovalRequested) -> None:
    requested = events_pb2.ApprovalRequested(
        tool_call_id=body.tool_call_id, name=body.name, arguments_json=body.arguments_json
    )
    if body.expire_time is not None:
        requested.expire_time.CopyFrom(timestamp(body.expire_time))
    wire.approval_requested.CopyFrom(requested)


def _approval_decided(wire: events_pb2.SessionEvent, body: ApprovalDecided) -> None:
    wire.approval_decided.CopyFrom(
        events_pb2.ApprovalDecided(
            tool_call_id=body.tool_call_id, approved=body.approved, reason=body.reason
        )
    )


def _session_created(wire: events_pb2.SessionEvent, body: SessionCreated) -> None:
    wire.session_created.session.CopyFrom(session_pb(body.session))


def _session_rewound(wire: events_pb2.SessionEvent, body: SessionRewound) -> None:
    wire.session_rewound.CopyFrom(
        events_pb2.SessionRewound(
            to_message_id=body.to_message_id,
            to_sequence=body.to_sequence,
            removed_messages=body.removed_messages,
        )
    )


# Each function takes the body type it is filed under.
EVENT_BODY_PB: Mapping[type[EventBody], Callable[[events_pb2.SessionEvent, Any], None]] = {
    TurnStarted: _turn_started,
    ContentDelta: _content_delta,
    ThinkingDelta: _thinking_delta,
    ToolCallStarted: _tool_call_started,
    ToolCallCompleted: _tool_call_completed,
    Usage: _usage,
    TurnCompleted: _turn_completed,
    TurnFailed: _turn_failed,
    TurnCancelled: _turn_cancelled,
    AgentStarted: _agent_started,
    AgentCompleted: _agent_completed,
    ApprovalRequested: _approval_requested,
    ApprovalDecided: _approval_decided,
    SessionCreated: _session_created,
    SessionRewound: _session_rewound,
}


def event_pb(event: Event) -> events_pb2.SessionEvent:
    """Domain event → wire."""
    wire = events_pb2.SessionEvent(
        sequence=event.sequence,
        turn_id=event.turn_id,
        event_time=timestamp(event.event_time),
    )
    EVENT_BODY_PB[type(event.body)](wire, event.body)
    return wire


def render_yaml(document: object) -> str:
    """A composed document as block YAML."""
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(document, out)
    return out.getvalue()


def prepared_pb(bundle: PreparedBundle) -> session_service_pb2.PrepareConfigResponse:
    """A prepared bundle as PrepareConfig reports it: secrets masked."""
    return session_service_pb2.PrepareConfigResponse(
        config_id=bundle.config_id,
        revision=bundle.revision,
        composed_yaml=render_yaml(dict(bundle.masked)),
        instruction=bundle.instruction,
        modules=[
            session_service_pb2.PreparedModule(
                kind=m.kind,
                module=m.module,
                source=m.source,
                field=m.field,
                implementation=m.implementation,
            )
            for m in bundle.modules
        ],
        composed_from=bundle.composed_from,
        valid=True,
        warnings=[_violation(w.field, w.description, WARNING) for w in bundle.warnings],
        default_provider=bundle.default_provider,
        agents=[
            session_service_pb2.PreparedAgent(
                name=a.name, description=a.description, source=a.source
            )
            for a in bundle.agents
        ],
        context=[
            session_service_pb2.PreparedContext(
                name=c.name, origin=c.origin, size_bytes=len(c.text.encode())
            )
            for c in bundle.context
        ],
    )


_IF_BUSY: dict[int, IfBusy] = {
    session_service_pb2.SendMessageRequest.IF_BUSY_UNSPECIFIED: IfBusy.REJECT,
    session_service_pb2.SendMessageRequest.IF_BUSY_REJECT: IfBusy.REJECT,
    session_service_pb2.SendMessageRequest.IF_BUSY_ENQUEUE: IfBusy.ENQUEUE,
    session_service_pb2.SendMessageRequest.IF_BUSY_INTERRUPT: IfBusy.INTERRUPT,
    session_service_pb2.SendMessageRequest.IF_BUSY_ROLLBACK: IfBusy.ROLLBACK,
}


def _if_busy(value: int) -> IfBusy:
    """SendMessageRequest.if_busy → domain; a value this server does not know is refused."""
    found = _IF_BUSY.get(value)
    if found is None:
        raise InvalidArgument(
            f"if_busy {value} is not a known strategy.",
            reason="INVALID_IF_BUSY",
            violations=[
                FieldViolation("if_busy", "must be REJECT, ENQUEUE, INTERRUPT or ROLLBACK")
            ],
        )
    return found


WARNING = config_pb2.SEVERITY_WARNING
ERROR = config_pb2.SEVERITY_ERROR


def _violation(
    field: str, message: str, severity: config_pb2.Severity.ValueType
) -> config_pb2.Violation:
    return config_pb2.Violation(field=field, message=message, severity=severity)


def refused_pb(
    config_id: str, revision: int, failed: PreparationFailed
) -> session_service_pb2.PrepareConfigResponse:
    """A revision that cannot be prepared, reported as data: every problem, located."""
    return session_service_pb2.PrepareConfigResponse(
        config_id=config_id,
        revision=revision,
        valid=False,
        violations=[
            _violation(f"{v.subject}", f"{v.type}: {v.description}", ERROR)
            for v in failed.violations
        ],
    )


class SessionServicer(session_service_pb2_grpc.SessionServiceServicer):
    """Maps SessionService RPCs onto the session domain."""

    def __init__(
        self, service: SessionService, turns: TurnService, forks: SessionForks, chat: Chat
    ) -> None:
        self._service = service
        self._turns = turns
        self._forks = forks
        self._chat = chat

    async def CreateSession(
        self, request: session_service_pb2.CreateSessionRequest, context: Context
    ) -> session_pb2.Session:
        check_count(request.tags, "tags", MAX_TAGS, "tags")
        created = await self._service.create(
            caller_tenant(),
            request.config_id,
            config_revision=request.config_revision,
            session_id=request.session_id,
            tags=dict(request.tags),
            request_id=request.request_id,
            start=request.start,
            display_name=request.display_name,
            time_remaining=context.time_remaining(),
            ttl=_seconds(request.ttl, request.HasField("ttl")),
            delete_after=_seconds(request.delete_after, request.HasField("delete_after")),
            overrides=request.overrides,
            visibility=_visibility(request.visibility),
        )
        return session_pb(created)

    async def GetSession(
        self, request: session_service_pb2.GetSessionRequest, context: Context
    ) -> session_pb2.Session:
        session_id = required(request.session_id, "session_id")
        return session_pb(await self._service.get(caller_tenant(), session_id))

    async def ListSessions(
        self, request: session_service_pb2.ListSessionsRequest, context: Context
    ) -> session_service_pb2.ListSessionsResponse:
        page = await self._service.list_sessions(
            caller_tenant(), request.filter, request.page_size, request.page_token
        )
        return session_service_pb2.ListSessionsResponse(
            sessions=[session_pb(s) for s in page.items],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    async def DeleteSession(
        self, request: session_service_pb2.DeleteSessionRequest, context: Context
    ) -> empty_pb2.Empty:
        session_id = required(request.session_id, "session_id")
        await self._service.delete(caller_tenant(), session_id)
        return empty_pb2.Empty()

    async def _transition(
        self,
        session_id: str,
        transition: Transition,
        context: Context,
        error_message: str = "",
        upgrade_config: bool = False,
    ) -> session_pb2.Session:
        updated = await self._service.transition(
            caller_tenant(),
            required(session_id, "session_id"),
            transition,
            error_message=error_message,
            upgrade_config=upgrade_config,
            time_remaining=context.time_remaining(),
        )
        return session_pb(updated)

    async def StartSession(
        self, request: session_service_pb2.StartSessionRequest, context: Context
    ) -> session_pb2.Session:
        return await self._transition(request.session_id, Transition.START, context)

    async def CompleteSession(
        self, request: session_service_pb2.CompleteSessionRequest, context: Context
    ) -> session_pb2.Session:
        return await self._transition(request.session_id, Transition.COMPLETE, context)

    async def FailSession(
        self, request: session_service_pb2.FailSessionRequest, context: Context
    ) -> session_pb2.Session:
        return await self._transition(
            request.session_id, Transition.FAIL, context, error_message=request.error_message
        )

    async def TerminateSession(
        self, request: session_service_pb2.TerminateSessionRequest, context: Context
    ) -> session_pb2.Session:
        return await self._transition(request.session_id, Transition.TERMINATE, context)

    async def ResumeSession(
        self, request: session_service_pb2.ResumeSessionRequest, context: Context
    ) -> session_pb2.Session:
        return await self._transition(
            request.session_id, Transition.RESUME, context, upgrade_config=request.upgrade_config
        )

    async def AppendMessage(
        self, request: session_service_pb2.AppendMessageRequest, context: Context
    ) -> session_pb2.Message:
        session_id = required(request.session_id, "session_id")
        message = request.message
        check_count(message.tool_calls, "message.tool_calls", MAX_TOOL_CALLS, "tool calls")
        appended = await self._service.append_message(
            caller_tenant(),
            session_id,
            _ROLE_FROM_WIRE.get(message.role),
            message.content,
            [ToolCall(c.tool_call_id, c.name, c.arguments_json) for c in message.tool_calls],
            message.tool_call_id,
        )
        return message_pb(appended)

    async def ListMessages(
        self, request: session_service_pb2.ListMessagesRequest, context: Context
    ) -> session_service_pb2.ListMessagesResponse:
        session_id = required(request.session_id, "session_id")
        page = await self._service.list_messages(
            caller_tenant(), session_id, request.page_size, request.page_token
        )
        return session_service_pb2.ListMessagesResponse(
            messages=[message_pb(m) for m in page.items], next_page_token=page.next_page_token
        )

    async def ForkSession(
        self, request: session_service_pb2.ForkSessionRequest, context: Context
    ) -> session_pb2.Session:
        session_id = required(request.session_id, "session_id")
        check_count(request.tags, "tags", MAX_TAGS, "tags")
        forked = await self._forks.fork(
            caller_tenant(),
            session_id,
            at_sequence=request.at_sequence,
            new_session_id=request.new_session_id,
            request_id=request.request_id,
            tags=dict(request.tags),
        )
        return session_pb(forked)

    async def RewindSession(
        self, request: session_service_pb2.RewindSessionRequest, context: Context
    ) -> session_pb2.Session:
        session_id = required(request.session_id, "session_id")
        to_message_id = required(request.to_message_id, "to_message_id")
        rewound = await self._forks.rewind(
            caller_tenant(), session_id, to_message_id, etag=request.etag
        )
        return session_pb(rewound)

    async def PrepareConfig(
        self, request: session_service_pb2.PrepareConfigRequest, context: Context
    ) -> session_service_pb2.PrepareConfigResponse:
        try:
            prepared = await self._service.prepare_config(
                caller_tenant(), request.config_id, request.revision, context.time_remaining()
            )
        except PreparationFailed as failed:
            # A dry run reports problems in its body: all of them, not a trailer's worth.
            revision = int(failed.metadata.get("revision", request.revision))
            return refused_pb(request.config_id, revision, failed)
        return prepared_pb(prepared)

    async def SendMessage(
        self, request: session_service_pb2.SendMessageRequest, context: Context
    ) -> AsyncIterator[events_pb2.SessionEvent]:
        turn_context = None
        if request.HasField("context"):
            check_struct(request.context, "context", TURN_CONTEXT_LIMITS)
            turn_context = struct_to_python(request.context)
        conversation = await self._chat.send(
            caller_tenant(),
            request.content,
            session_id=request.session_id,
            config_id=request.config_id,
            config_revision=request.config_revision,
            overrides=request.overrides,
            request_id=request.request_id,
            turn_context=turn_context,
            if_busy=_if_busy(request.if_busy),
            time_remaining=context.time_remaining(),
        )
        accepted = conversation.accepted
        if accepted.queued_ahead:
            # Only this stream hears that its turn waits: it is no event of the log.
            yield events_pb2.SessionEvent(
                turn_id=accepted.turn_id,
                turn_queued=events_pb2.TurnQueued(
                    turn_id=accepted.turn_id, position=accepted.queued_ahead
                ),
            )
        async for event in conversation.events:
            yield event_pb(event)

    async def StreamEvents(
        self, request: session_service_pb2.StreamEventsRequest, context: Context
    ) -> AsyncIterator[events_pb2.SessionEvent]:
        session_id = required(request.session_id, "session_id")
        async for event in self._turns.events(
            caller_tenant(), session_id, request.after_sequence, follow=request.follow
        ):
            yield event_pb(event)

    async def CancelTurn(
        self, request: session_service_pb2.CancelTurnRequest, context: Context
    ) -> session_service_pb2.CancelTurnResponse:
        session_id = required(request.session_id, "session_id")
        turn_id = await self._turns.cancel(caller_tenant(), session_id, request.turn_id)
        return session_service_pb2.CancelTurnResponse(turn_id=turn_id)

    async def DecideApproval(
        self, request: session_service_pb2.DecideApprovalRequest, context: Context
    ) -> session_service_pb2.DecideApprovalResponse:
        session_id = required(request.session_id, "session_id")
        tool_call_id = required(request.tool_call_id, "tool_call_id")
        request_type = session_service_pb2.DecideApprovalRequest
        if request.decision not in (request_type.DECISION_APPROVE, request_type.DECISION_DENY):
            raise InvalidArgument(
                "decision must be DECISION_APPROVE or DECISION_DENY.",
                reason="DECISION_REQUIRED",
                violations=[
                    FieldViolation("decision", "must be DECISION_APPROVE or DECISION_DENY")
                ],
            )
        decided = await self._turns.decide(
            caller_tenant(),
            session_id,
            tool_call_id,
            request.decision == request_type.DECISION_APPROVE,
            request.reason,
        )
        return session_service_pb2.DecideApprovalResponse(
            turn_id=decided.turn_id,
            resumed=decided.resumed,
            pending_tool_call_ids=list(decided.pending),
        )

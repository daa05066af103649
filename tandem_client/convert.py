"""Conversions from the generated wire messages to the client's own dataclasses.

Private to the package: the generated types never leave it. Reads no config keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import events_pb2, session_pb2, session_service_pb2
from tandem_client.errors import ERROR_CLASSES, TandemError, error_from_status
from tandem_client.models import (
    ApprovalDecision,
    BundleSummary,
    Config,
    ConfigChange,
    Event,
    ImportResult,
    Message,
    PreparedAgent,
    PreparedContext,
    PreparedModule,
    PrepareResult,
    Session,
    ToolCall,
    Usage,
    ValidationResult,
    Violation,
)


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)


def _enum(name: str, prefix: str) -> str:
    # "SESSION_STATUS_ACTIVE" reads better as "ACTIVE"; an unknown number stays a number.
    return name.removeprefix(prefix)


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    try:
        return _enum(str(enum.Name(value)), prefix)
    except ValueError:
        return str(value)


def violation(pb: config_pb2.Violation) -> Violation:
    """A located violation."""
    return Violation(
        field=pb.field,
        line=pb.line,
        column=pb.column,
        message=pb.message,
        severity=_enum_name(config_pb2.Severity, pb.severity, "SEVERITY_"),
    )


def summary(pb: config_pb2.BundleSummary) -> BundleSummary:
    """A bundle summary."""
    return BundleSummary(
        name=pb.name,
        version=pb.version,
        description=pb.description,
        providers=list(pb.providers),
        tools=list(pb.tools),
        hooks=list(pb.hooks),
        includes=list(pb.includes),
        orchestrator=pb.orchestrator,
        context=pb.context,
        has_instruction=pb.has_instruction,
    )


def config(pb: config_pb2.Config) -> Config:
    """A config."""
    return Config(
        config_id=pb.config_id,
        name=pb.name,
        description=pb.description,
        yaml_content=pb.yaml_content,
        tags=dict(pb.tags),
        revision=pb.revision,
        etag=pb.etag,
        create_time=_time(pb, "create_time"),
        update_time=_time(pb, "update_time"),
        summary=summary(pb.summary),
        kind=_enum_name(config_pb2.ConfigKind, pb.kind, "CONFIG_KIND_"),
        namespace=pb.namespace,
        path=pb.path,
        source_uri=pb.source_uri,
        warnings=[violation(v) for v in pb.warnings],
    )


def change(pb: config_pb2.ConfigChange) -> ConfigChange:
    """A config change."""
    return ConfigChange(
        sequence=pb.sequence,
        type=_enum_name(config_pb2.ChangeType, pb.type, "CHANGE_TYPE_"),
        config_id=pb.config_id,
        revision=pb.revision,
        etag=pb.etag,
        name=pb.name,
        change_time=_time(pb, "change_time"),
    )


def validation(pb: config_service_pb2.ValidateConfigResponse) -> ValidationResult:
    """A validation result."""
    return ValidationResult(
        valid=pb.valid,
        violations=[violation(v) for v in pb.violations],
        summary=summary(pb.summary),
    )


def imported(pb: config_service_pb2.ImportBundleResponse) -> ImportResult:
    """An import's outcome."""
    return ImportResult(
        namespace=pb.namespace,
        configs=[config(c) for c in pb.configs],
        warnings=[violation(v) for v in pb.warnings],
        created=pb.created,
        updated=pb.updated,
        unchanged=pb.unchanged,
        deleted=pb.deleted,
    )


def session(pb: session_pb2.Session) -> Session:
    """A session."""
    return Session(
        session_id=pb.session_id,
        config_id=pb.config_id,
        config_revision=pb.config_revision,
        status=_enum_name(session_pb2.SessionStatus, pb.status, "SESSION_STATUS_"),
        error_message=pb.error_message,
        message_count=pb.message_count,
        last_sequence=pb.last_sequence,
        active_turn_id=pb.active_turn_id,
        tags=dict(pb.tags),
        create_time=_time(pb, "create_time"),
        update_time=_time(pb, "update_time"),
        etag=pb.etag,
        parent_session_id=pb.parent_session_id,
        agent=pb.agent,
        display_name=pb.display_name,
        forked_from_session_id=pb.forked_from.session_id,
        forked_from_sequence=pb.forked_from.sequence,
    )


def message(pb: session_pb2.Message) -> Message:
    """A transcript message."""
    return Message(
        message_id=pb.message_id,
        role=_enum_name(session_pb2.Role, pb.role, "ROLE_"),
        content=pb.content,
        tool_calls=[ToolCall(c.tool_call_id, c.name, c.arguments_json) for c in pb.tool_calls],
        tool_call_id=pb.tool_call_id,
        sequence=pb.sequence,
        create_time=_time(pb, "create_time"),
        turn_id=pb.turn_id,
    )


def _optional_message(holder: Any, name: str) -> Message | None:
    return message(getattr(holder, name)) if holder.HasField(name) else None


def event(pb: events_pb2.SessionEvent) -> Event:
    """A session event: the oneof's name becomes `kind`, its fields the typed ones."""
    kind = pb.WhichOneof("event") or ""
    base: dict[str, Any] = {
        "sequence": pb.sequence,
        "turn_id": pb.turn_id,
        "time": _time(pb, "event_time"),
        "kind": kind,
    }
    if kind == "turn_started":
        started = pb.turn_started
        base |= {
            "message": _optional_message(started, "user_message"),
            "request_id": started.request_id,
        }
    elif kind == "content_delta":
        base["text"] = pb.content_delta.text
    elif kind == "thinking_delta":
        base["text"] = pb.thinking_delta.text
    elif kind == "tool_call_started":
        call = pb.tool_call_started
        base |= {
            "tool_call_id": call.tool_call_id,
            "name": call.name,
            "arguments_json": call.arguments_json,
        }
    elif kind == "tool_call_completed":
        done = pb.tool_call_completed
        base |= {
            "tool_call_id": done.tool_call_id,
            "result": done.result,
            "is_error": done.is_error,
        }
    elif kind == "usage":
        usage = pb.usage
        base["usage"] = Usage(usage.input_tokens, usage.output_tokens, usage.provider, usage.model)
    elif kind == "turn_completed":
        completed = pb.turn_completed
        base |= {
            "stop_reason": completed.stop_reason,
            "message": _optional_message(completed, "message"),
        }
    elif kind == "turn_failed":
        failed = pb.turn_failed
        base |= {
            "error": _turn_error(failed),
            "error_message": failed.message,
            "reason": failed.code,
        }
    elif kind == "turn_cancelled":
        cancelled = pb.turn_cancelled
        base |= {
            "reason": cancelled.reason,
            "message": _optional_message(cancelled, "partial_message"),
        }
    elif kind in ("agent_started", "agent_completed"):
        agent = getattr(pb, kind)
        base |= {
            "tool_call_id": agent.tool_call_id,
            "name": agent.agent,
            "child_session_id": agent.session_id,
            "child_turn_id": agent.child_turn_id,
        }
        if kind == "agent_started":
            base["resumed"] = agent.resumed
        else:
            base |= {"outcome": agent.outcome, "error_message": agent.error_message}
    elif kind == "approval_requested":
        requested = pb.approval_requested
        base |= {
            "tool_call_id": requested.tool_call_id,
            "name": requested.name,
            "arguments_json": requested.arguments_json,
            "expire_time": _time(requested, "expire_time"),
        }
    elif kind == "approval_decided":
        decided = pb.approval_decided
        base |= {
            "tool_call_id": decided.tool_call_id,
            "approved": decided.approved,
            "reason": decided.reason,
        }
    elif kind == "session_created":
        created = pb.session_created
        base["session"] = session(created.session) if created.HasField("session") else None
    elif kind == "session_rewound":
        rewound = pb.session_rewound
        base |= {
            "to_message_id": rewound.to_message_id,
            "to_sequence": rewound.to_sequence,
            "removed_messages": rewound.removed_messages,
        }
    return Event(**base)


def _turn_error(failed: events_pb2.TurnFailed) -> TandemError:
    # code is a status name ("UNAVAILABLE") or a turn's own ("REPLICA_STOPPED"); the packed
    # status, when the server sends one, is the error as a unary call would raise it.
    if failed.HasField("status"):
        error = error_from_status(failed.status, message=failed.message or None)
        error.reason = error.reason or failed.code
        return error
    if failed.code in ERROR_CLASSES:
        return ERROR_CLASSES[failed.code](failed.message)
    return TandemError(failed.message, code="UNKNOWN", reason=failed.code)


def approval(pb: session_service_pb2.DecideApprovalResponse) -> ApprovalDecision:
    """DecideApproval's outcome."""
    return ApprovalDecision(pb.turn_id, pb.resumed, list(pb.pending_tool_call_ids))


def prepared(pb: session_service_pb2.PrepareConfigResponse) -> PrepareResult:
    """A dry run's result."""
    return PrepareResult(
        config_id=pb.config_id,
        revision=pb.revision,
        valid=pb.valid,
        violations=[violation(v) for v in pb.violations],
        warnings=[violation(v) for v in pb.warnings],
        composed_yaml=pb.composed_yaml,
        instruction=pb.instruction,
        modules=[
            PreparedModule(m.kind, m.module, m.source, m.field, m.implementation)
            for m in pb.modules
        ],
        composed_from=list(pb.composed_from),
        default_provider=pb.default_provider,
        agents=[PreparedAgent(a.name, a.description, a.source) for a in pb.agents],
        context=[PreparedContext(c.name, c.origin, c.size_bytes) for c in pb.context],
    )

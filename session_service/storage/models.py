"""SessionService's tables. Every table carries tenant_id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db.idempotency import IdempotencyKeyColumns
from shared.db.metadata import service_metadata
from shared.db.types import JSONType, UTCDateTime


class Base(DeclarativeBase):
    """Declarative base of SessionService's own metadata."""

    metadata = service_metadata()


class IdempotencyKey(IdempotencyKeyColumns, Base):
    """First responses of CreateSession and SendMessage calls that carried a request_id."""

    __tablename__ = "session_idempotency_keys"


class SessionRow(Base):
    """A session's current state."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_config", "tenant_id", "config_id"),
        Index("ix_sessions_status", "tenant_id", "status"),
        Index("ix_sessions_parent", "tenant_id", "parent_session_id"),
        # The lifetime sweeper's questions, across tenants: who idled out, who is due to go.
        Index("ix_sessions_idle_expire", "idle_expire_time"),
        Index("ix_sessions_delete_time", "delete_time"),
        # Listings of a regular caller filter by owner (beside ORG and the caller's team).
        Index("ix_sessions_owner", "tenant_id", "owner"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    config_id: Mapped[str] = mapped_column(String(64))
    # Who created it and their team then; who else sees it (PRIVATE, TEAM or ORG). Set at
    # create only.
    owner: Mapped[str] = mapped_column(Text, default="", server_default="")
    visibility: Mapped[str] = mapped_column(String(16), default="ORG", server_default="ORG")
    team: Mapped[str] = mapped_column(String(128), default="", server_default="")
    config_revision: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    error_message: Mapped[str] = mapped_column(Text, default="")
    message_count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    active_turn_id: Mapped[str] = mapped_column(String(64), default="")
    # A child session: the session that started it, and the agent it runs.
    parent_session_id: Mapped[str] = mapped_column(String(64), default="")
    agent: Mapped[str] = mapped_column(String(256), default="")
    display_name: Mapped[str] = mapped_column(String(256), default="")
    tags: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    # Bumped on every write: the etag, and the guard for concurrent lifecycle changes.
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime())
    update_time: Mapped[datetime] = mapped_column(UTCDateTime())
    # Idle limit and retention in seconds (0: none), and the deadlines they give.
    ttl_seconds: Mapped[float] = mapped_column(Float(), default=0.0)
    delete_after_seconds: Mapped[float] = mapped_column(Float(), default=0.0)
    last_activity_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    idle_expire_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delete_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completion_reason: Mapped[str] = mapped_column(String(32), default="")
    # The session's bundle fragment (CreateSession overrides), written once at insert.
    overrides: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Turns waiting in session_turn_queue, kept by the Session aggregate with each write.
    queued_turns: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Event retention: the deltas of every turn up to this sequence were compacted away.
    # Written by compaction only, never by a session write.
    compacted_through: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # A session ForkSession made: the session and the message sequence it was cut at. Set at
    # create only.
    forked_from_session_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    forked_from_sequence: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class MessageRow(Base):
    """One transcript entry, numbered from 1 within its session."""

    __tablename__ = "session_messages"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    message_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    tool_calls: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    tool_call_id: Mapped[str] = mapped_column(String(128), default="")
    turn_id: Mapped[str] = mapped_column(String(64), default="")
    create_time: Mapped[datetime] = mapped_column(UTCDateTime())


class TurnRow(Base):
    """One turn: who asked for it (request_id), where it runs, how it ended."""

    __tablename__ = "session_turns"
    __table_args__ = (
        Index("ux_session_turns_request", "tenant_id", "session_id", "request_id", unique=True),
        # Counts a tenant's running turns for its concurrency quota.
        Index("ix_session_turns_status", "tenant_id", "status"),
        # Event retention finds the oldest finished turns, across tenants.
        Index("ix_session_turns_end_time", "end_time"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    turn_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # NULL when the caller gave none, so the unique index only binds real ids.
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    first_sequence: Mapped[int] = mapped_column(BigInteger)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    runner: Mapped[str] = mapped_column(String(128), default="")
    # Renewed by the replica running the turn; once past, the turn has no owner.
    lease_expires: Mapped[datetime] = mapped_column(UTCDateTime())
    create_time: Mapped[datetime] = mapped_column(UTCDateTime())
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class EventRow(Base):
    """One entry of a session's event log, numbered gap-free from 1 within its session."""

    __tablename__ = "session_events"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    turn_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    event_time: Mapped[datetime] = mapped_column(UTCDateTime())


class RateBucketRow(Base):
    """A tenant's token bucket for one rate limit, shared by every replica."""

    __tablename__ = "session_rate_buckets"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float())
    # Epoch seconds: replicas compare it with their own clocks.
    refreshed_at: Mapped[float] = mapped_column(Float())


class TenantUsageRow(Base):
    """How many sessions a tenant holds, kept in step with `sessions` by every insert and
    delete, so the sessions quota is one row to read and lock rather than rows to count."""

    __tablename__ = "session_tenant_usage"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sessions: Mapped[int] = mapped_column(BigInteger)


class ApprovalRow(Base):
    """A tool call a waiting turn paused for, and the decision on it."""

    __tablename__ = "session_approvals"
    __table_args__ = (
        # The sweeper's question: which pending calls ran out of time?
        Index("ix_session_approvals_expiry", "status", "expire_time"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    turn_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tool_call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    arguments_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(UTCDateTime())
    expire_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decide_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TurnQueueRow(Base):
    """A turn waiting behind its session's active turn (SendMessage if_busy), head first.

    Positions only grow at the tail (ENQUEUE) and shrink at the head (INTERRUPT, ROLLBACK),
    so they may go below 1; only their order means anything.
    """

    __tablename__ = "session_turn_queue"
    __table_args__ = (
        # A retried SendMessage finds its queued turn rather than queueing another.
        Index(
            "ux_session_turn_queue_request", "tenant_id", "session_id", "request_id", unique=True
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    turn_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(64))
    # NULL when the caller gave none, so the unique index only binds real ids.
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    content: Mapped[str] = mapped_column(Text)
    turn_context: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # ROLLBACK: the running turn whose messages leave the transcript when it ends.
    rolls_back: Mapped[str] = mapped_column(String(64), default="")
    create_time: Mapped[datetime] = mapped_column(UTCDateTime())

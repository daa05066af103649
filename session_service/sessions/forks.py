"""ForkSession and RewindSession: a session's transcript cut at a message, copied or rewound.

Both cut a transcript, and one rule (`check_cut`) says where that may happen: never between
an assistant's tool call and its result, which would reach the model unanswered. A fork
copies the transcript up to the cut, the session's settings and its files into a new
top-level session whose event log starts empty; a rewind removes what follows the cut from
the session itself and records SessionRewound in its log (through `turns.log`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from session_service.ports import SessionUoW, SessionUoWFactory
from session_service.sessions.model import (
    Message,
    Role,
    Session,
    Status,
    check_tags,
    turn_in_progress,
)
from session_service.sessions.service import (
    insert_new,
    left_to_its_lease,
    replayed,
    visible_session,
)
from session_service.turns import log
from session_service.turns.agents import ancestors
from session_service.turns.engine import MAX_AGENT_CHAIN
from session_service.turns.reaping import fail_abandoned
from session_service.turns.signals import Deadlines, TurnSignals, log_key
from session_service.workspace import CopyLimits, Workspaces, WorkspaceTooLarge
from shared.clock import utcnow
from shared.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    QuotaViolation,
    ResourceExhausted,
)
from shared.idempotency import check_request_id, fingerprint, first_response
from shared.identifiers import check_id
from shared.quotas import PolicyLookup, unlimited
from shared.visibility import caller

FORK_METHOD = "ForkSession"
_READ_BATCH = 1000


def check_cut(messages: Sequence[Message], sequence: int, field: str) -> None:
    """INVALID_ARGUMENT, located at field, when keeping the messages up to sequence (and
    dropping the rest) would part an assistant's tool call from its result.

    messages is the transcript in order. A call whose result never came stays as it was in
    the transcript: no cut makes it worse. A later call that reuses an id is its own call.
    """
    waiting: dict[str, int] = {}
    for message in messages:
        if message.sequence <= sequence:
            if message.role is Role.TOOL:
                waiting.pop(message.tool_call_id, None)
            for call in message.tool_calls:
                waiting[call.tool_call_id] = message.sequence
            continue
        if not waiting:
            return
        for call in message.tool_calls:
            waiting.pop(call.tool_call_id, None)
        if message.role is Role.TOOL and message.tool_call_id in waiting:
            call_id = message.tool_call_id
            raise InvalidArgument(
                f"Cutting the transcript after message {sequence} would leave tool call "
                f"{call_id!r} (message {waiting[call_id]}) without its result (message "
                f"{message.sequence}); cut before the call or after its result.",
                reason="CUT_SPLITS_TOOL_CALL",
                metadata={"tool_call_id": call_id, "result_sequence": str(message.sequence)},
                violations=[
                    FieldViolation(
                        field,
                        f"parts tool call {call_id!r} from its result at sequence "
                        f"{message.sequence}",
                    )
                ],
            )


def fork_point(session: Session, messages: Sequence[Message], at_sequence: int) -> int:
    """The sequence of the last message a fork of session at at_sequence keeps (0: the end).

    While a turn runs (or waits for approvals), the end is the last message before it: the
    turn's own messages, its user message first, are not finished. An explicit point inside
    that turn is TURN_IN_PROGRESS; one past the transcript is INVALID_ARGUMENT.
    """
    if at_sequence < 0 or at_sequence > session.message_count:
        raise InvalidArgument(
            f"at_sequence {at_sequence} is not a message of session {session.session_id!r} "
            f"(it has {session.message_count}; 0 forks at the end).",
            reason="INVALID_FORK_POINT",
            metadata={"message_count": str(session.message_count)},
            violations=[FieldViolation("at_sequence", f"must be 0 to {session.message_count}")],
        )
    settled = session.message_count
    if session.active_turn_id:
        running = [m.sequence for m in messages if m.turn_id == session.active_turn_id]
        if running:
            settled = min(running) - 1
    if at_sequence == 0:
        return settled
    if at_sequence > settled:
        raise turn_in_progress(session, f"fork past message {settled} of")
    return at_sequence


def forked_session(
    parent: Session, session_id: str, cut: int, tags: Mapping[str, str], now: datetime
) -> Session:
    """The new session a fork of parent at cut makes: the parent's settings (whatever fields
    a session has), with what belongs to the parent's own history and identity reset."""
    fork = dataclasses.replace(
        parent,
        session_id=session_id,
        status=Status.ACTIVE,
        create_time=now,
        update_time=now,
        version=1,
        tags=dict(tags) if tags else dict(parent.tags),
        error_message="",
        message_count=cut,
        last_sequence=0,
        active_turn_id="",
        # A fork is a session of its own, not an agent's child: it works in its own files.
        parent_session_id="",
        completion_reason="",
        queued_turns=0,
        compacted_through=0,
        forked_from_session_id=parent.session_id,
        forked_from_sequence=cut,
    )
    return dataclasses.replace(fork, **fork.lifetime(now, fork.status))


def _fork_fingerprint(
    session_id: str, at_sequence: int, new_session_id: str, tags: Mapping[str, str]
) -> str:
    """What makes two ForkSession requests the same request (all but its request_id)."""
    request = {
        "session_id": session_id,
        "at_sequence": at_sequence,
        "new_session_id": new_session_id,
        "tags": dict(sorted(tags.items())),
    }
    return fingerprint(json.dumps(request, sort_keys=True).encode())


def _check_etag(session: Session, etag: str) -> None:
    if etag and etag != session.etag:
        raise Aborted(
            f"Session {session.session_id!r} changed since it was read; read it again and "
            "retry with the new etag.",
            reason="ETAG_MISMATCH",
            metadata={"session_id": session.session_id, "etag": session.etag},
            violations=[
                PreconditionViolation(
                    "ETAG_MISMATCH", f"sessions/{session.session_id}", "etag is stale"
                )
            ],
        )


def _message_not_found(session_id: str, message_id: str) -> NotFound:
    return NotFound(
        f"Session {session_id!r} has no message {message_id!r} in its transcript.",
        reason="MESSAGE_NOT_FOUND",
        resource_type="Message",
        resource_name=message_id,
    )


async def _transcript(uow: SessionUoW, tenant_id: str, session_id: str, upto: int) -> list[Message]:
    """The session's messages 1..upto, in order."""
    messages: list[Message] = []
    after = 0
    while after < upto:
        page = await uow.messages.page(tenant_id, session_id, after, _READ_BATCH)
        messages.extend(m for m in page if m.sequence <= upto)
        if len(page) < _READ_BATCH:
            break
        after = page[-1].sequence
    return messages


class SessionForks:
    """ForkSession and RewindSession."""

    def __init__(
        self,
        unit_of_work: SessionUoWFactory,
        *,
        policies: PolicyLookup = unlimited,
        workspaces: Workspaces | None = None,
        signals: TurnSignals | None = None,
        deadlines: Deadlines | None = None,
        copy_limits: CopyLimits | None = None,
        start_queued: Callable[[log.NextTurn], None] = left_to_its_lease,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._policies = policies
        self._workspaces = workspaces
        # Hands SessionRewound to this replica's followers from memory.
        self._signals = signals
        # Told of a fork's idle deadline, so this replica's sweeper wakes for it.
        self._deadlines = deadlines
        self._copy_limits = copy_limits or CopyLimits()
        # Runs a queued turn that began when a fork here failed the turn before it.
        self._start_queued = start_queued

    async def fork(
        self,
        tenant_id: str,
        session_id: str,
        *,
        at_sequence: int = 0,
        new_session_id: str = "",
        request_id: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> Session:
        """A new ACTIVE session with session_id's transcript up to at_sequence (0: the end),
        its settings and a copy of its files, counted against the sessions quota.

        A retry with the same request_id and request returns the first response.
        """
        if new_session_id:
            check_id(new_session_id, "new_session_id", "INVALID_SESSION_ID")
        if request_id:
            check_request_id(request_id)
        check_tags(tags or {})
        if at_sequence < 0:
            raise InvalidArgument(
                "at_sequence must not be negative.",
                reason="INVALID_FORK_POINT",
                violations=[FieldViolation("at_sequence", "must be >= 0 (0 forks at the end)")],
            )
        request_fingerprint = _fork_fingerprint(session_id, at_sequence, new_session_id, tags or {})
        if request_id:
            async with self._unit_of_work() as uow:
                replay = await replayed(
                    uow, tenant_id, FORK_METHOD, request_id, request_fingerprint
                )
            if replay is not None:
                return replay
        forked = await first_response(
            lambda: self._fork(
                tenant_id,
                session_id,
                at_sequence,
                new_session_id or uuid.uuid4().hex,
                request_id,
                request_fingerprint,
                tags or {},
            )
        )
        if self._deadlines is not None and forked.idle_expire_time is not None:
            self._deadlines.note(forked.idle_expire_time)
        return forked

    async def _fork(
        self,
        tenant_id: str,
        session_id: str,
        at_sequence: int,
        new_session_id: str,
        request_id: str,
        request_fingerprint: str,
        tags: Mapping[str, str],
    ) -> Session:
        # The parent under its row lock, so its transcript is read as one moment of it (its
        # turn writes under the same lock), and a turn whose runner died is failed first.
        async with self._unit_of_work(write=True) as uow:
            if request_id:
                replay = await replayed(
                    uow, tenant_id, FORK_METHOD, request_id, request_fingerprint
                )
                if replay is not None:
                    return replay
            # NOT_FOUND as for an unknown id when the caller may not see it.
            parent = await visible_session(uow, tenant_id, session_id, for_update=True)
            parent, reaped = await fail_abandoned(uow, tenant_id, parent)
            transcript = await _transcript(uow, tenant_id, session_id, parent.message_count)
            files_of = await _workspace_owner(uow, tenant_id, parent)
            await uow.commit()
        if reaped is not None and reaped.next is not None:
            self._start_queued(reaped.next)
        cut = fork_point(parent, transcript, at_sequence)
        check_cut(transcript, cut, "at_sequence")
        fork = forked_session(parent, new_session_id, cut, tags, utcnow())
        # A fork is the forking caller's, shared as its parent was.
        forker = caller()
        fork = dataclasses.replace(fork, owner=forker.subject, team=forker.team)

        staged = await self._stage(tenant_id, parent, files_of)
        placed = committed = False
        try:
            async with self._unit_of_work(write=True) as uow:
                if request_id:
                    replay = await replayed(
                        uow, tenant_id, FORK_METHOD, request_id, request_fingerprint
                    )
                    if replay is not None:
                        return replay
                # As CreateSession stores its session.
                await insert_new(
                    uow,
                    tenant_id,
                    fork,
                    self._policies,
                    FORK_METHOD,
                    request_id,
                    request_fingerprint,
                )
                for message in transcript[:cut]:
                    # Keys are (session, sequence); a fresh id keeps message ids unique.
                    copied = dataclasses.replace(message, message_id=uuid.uuid4().hex)
                    await uow.messages.append(tenant_id, fork.session_id, copied)
                if staged is not None and self._workspaces is not None:
                    # Moved in while the new row is written but not committed: nobody else
                    # can claim the id meanwhile, and a failed commit removes it below.
                    await asyncio.to_thread(
                        self._workspaces.place, staged, tenant_id, fork.session_id
                    )
                    placed = True
                await uow.commit()
                committed = True
        finally:
            if not committed and staged is not None and self._workspaces is not None:
                if placed:
                    await asyncio.to_thread(self._workspaces.remove, tenant_id, fork.session_id)
                else:
                    await asyncio.to_thread(self._workspaces.discard, staged)
        return fork

    async def _stage(self, tenant_id: str, parent: Session, files_of: str) -> Path | None:
        """A staged copy of the parent's files: the workspace it works in (files_of's) and
        its own state folder."""
        if self._workspaces is None:
            return None
        try:
            return await asyncio.to_thread(
                self._workspaces.stage_copy,
                tenant_id,
                files_of,
                parent.session_id,
                self._copy_limits,
            )
        except WorkspaceTooLarge as exc:
            raise ResourceExhausted(
                f"Session {parent.session_id!r} cannot be forked: {exc}.",
                reason="WORKSPACE_TOO_LARGE",
                metadata={"limit": str(exc.limit), "unit": exc.what},
                violations=[
                    QuotaViolation(
                        f"sessions/{parent.session_id}/workspace",
                        f"more than {exc.limit} {exc.what} to copy",
                    )
                ],
            ) from None

    async def rewind(
        self, tenant_id: str, session_id: str, to_message_id: str, *, etag: str = ""
    ) -> Session:
        """Removes the messages after to_message_id from the transcript, between turns of an
        open session, and records SessionRewound; a stale etag is ABORTED."""
        if not to_message_id:
            raise InvalidArgument(
                "to_message_id is required.",
                reason="FIELD_REQUIRED",
                violations=[FieldViolation("to_message_id", "is required")],
            )
        origin = self._signals.origin if self._signals is not None else ""
        async with self._unit_of_work(write=True) as uow:
            current = await visible_session(uow, tenant_id, session_id, for_update=True)
            current, _ = await fail_abandoned(uow, tenant_id, current)
            _check_etag(current, etag)
            current.check_rewind()
            transcript = await _transcript(uow, tenant_id, session_id, current.message_count)
            target = next((m for m in transcript if m.message_id == to_message_id), None)
            if target is None:
                raise _message_not_found(session_id, to_message_id)
            check_cut(transcript, target.sequence, "to_message_id")
            rewound, event = await log.rewind(
                uow,
                tenant_id,
                current,
                target.sequence,
                target.message_id,
                now=utcnow(),
                origin=origin,
            )
            await uow.commit()
        if self._signals is not None:
            self._signals.hub.publish(log_key(tenant_id, session_id), [event])
        if self._deadlines is not None and rewound.idle_expire_time is not None:
            self._deadlines.note(rewound.idle_expire_time)
        return rewound


async def _workspace_owner(uow: SessionUoW, tenant_id: str, session: Session) -> str:
    """Whose workspace session works in: its own, or for an agent's child session that of
    the session that started the chain (as its turns do)."""
    if not session.parent_session_id:
        return session.session_id
    chain = await ancestors(uow, tenant_id, session.parent_session_id, MAX_AGENT_CHAIN)
    return chain[-1]

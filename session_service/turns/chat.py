"""SendMessage as one use case: a user message to a session, or to a config.

Given a config instead of a session (one-call chat), it first creates and starts a session
on it, whose log opens with SessionCreated, then runs the turn there. The create is
idempotent under the message's request_id, in a scope of its own, so a retry finds the same
session and replays the same stream instead of making another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from session_service.sessions.service import SessionService
from session_service.turns.model import Event
from session_service.turns.queue import IfBusy
from session_service.turns.service import Accepted, TurnService, check_content
from shared.errors import FieldViolation, InvalidArgument

# Where the request_id of a one-call chat is remembered: apart from CreateSession's, so the
# same id in both never names one session for the other.
ONE_CALL_SCOPE = "SendMessage"


@dataclass(frozen=True)
class Conversation:
    """An accepted message: the session it went to, its turn, and that turn's events."""

    session_id: str
    accepted: Accepted
    events: AsyncIterator[Event]


class Chat:
    """Sends user messages: to a session, or to a config through a session made for it."""

    def __init__(self, sessions: SessionService, turns: TurnService) -> None:
        self._sessions = sessions
        self._turns = turns

    async def send(
        self,
        tenant_id: str,
        content: str,
        *,
        session_id: str = "",
        config_id: str = "",
        config_revision: int = 0,
        overrides: str = "",
        request_id: str = "",
        turn_context: Mapping[str, Any] | None = None,
        if_busy: IfBusy = IfBusy.REJECT,
        time_remaining: float | None = None,
    ) -> Conversation:
        """Accepts content (see TurnService.send); with config_id, in a new session.

        The events are those of the message's turn; a new session's start with its
        SessionCreated (event 1), since nothing else can be written to a session no one
        else knew of.
        """
        check_target(session_id, config_id, config_revision, overrides)
        if config_id:
            # Checked before the session is made, so a refused message leaves none behind.
            check_content(content)
            created = await self._sessions.create(
                tenant_id,
                config_id,
                config_revision=config_revision,
                request_id=request_id,
                start=True,
                time_remaining=time_remaining,
                announce=True,
                request_method=ONE_CALL_SCOPE,
                overrides=overrides,
            )
            session_id = created.session_id
        accepted = await self._turns.send(
            tenant_id,
            session_id,
            content,
            request_id=request_id,
            turn_context=turn_context,
            if_busy=if_busy,
        )
        events = self._turns.events(
            tenant_id,
            session_id,
            0 if config_id else accepted.after_sequence,
            turn_id=accepted.turn_id,
            only_turn=accepted.queued_ahead > 0,
        )
        return Conversation(session_id, accepted, events)


def check_target(session_id: str, config_id: str, config_revision: int, overrides: str) -> None:
    """Exactly one of session_id and config_id; a revision and overrides only with config_id."""
    if session_id and config_id:
        raise InvalidArgument(
            "Give session_id or config_id, not both.",
            reason="SESSION_OR_CONFIG",
            violations=[
                FieldViolation("config_id", "must be empty when session_id is given"),
            ],
        )
    if not session_id and not config_id:
        raise InvalidArgument(
            "session_id (or config_id, to start a new session) is required.",
            reason="FIELD_REQUIRED",
            violations=[
                FieldViolation("session_id", "one of session_id or config_id is required"),
                FieldViolation("config_id", "one of session_id or config_id is required"),
            ],
        )
    if config_revision and not config_id:
        raise InvalidArgument(
            "config_revision is only for a new session (with config_id).",
            reason="SESSION_OR_CONFIG",
            violations=[FieldViolation("config_revision", "must be 0 when session_id is given")],
        )
    if overrides and not config_id:
        # A session's overrides are fixed when it is made; a turn cannot change them.
        raise InvalidArgument(
            "overrides are only for a new session (with config_id).",
            reason="SESSION_OR_CONFIG",
            violations=[FieldViolation("overrides", "must be empty when session_id is given")],
        )

"""Agents as child sessions: the AgentHost a turn hands to tool-delegate and tool-task.

An agent call makes a child session (parent_session_id, agent) pinned to the parent's config
revision, or continues an earlier child of the same parent, and runs one turn in it through
the same path as SendMessage: its events go to its own log, where any client can follow
them, and the tenant's quotas apply to it. The parent's log records AgentStarted and
AgentCompleted around it. Children run on the parent's replica, so cancelling the parent's
turn (CancelTurn, a stopping replica, a tool timeout) cancels theirs, and the parent waits
for them to end before it does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from session_service.ports import SessionUoW, SessionUoWFactory
from session_service.prepare.model import PreparedBundle
from session_service.prepare.spawn import SELF_AGENT, spawn_max_depth
from session_service.sessions.model import Session
from session_service.turns.model import (
    AgentCompleted,
    AgentStarted,
    EventBody,
    TurnCancelled,
    TurnCompleted,
    TurnFailed,
    TurnStatus,
)
from session_service.turns.protocols import (
    CURRENT_TOOL_CALL,
    AgentInfo,
    AgentRefused,
    AgentRun,
    ChatMessage,
)
from shared.errors import TandemError

COMPLETED, FAILED, CANCELLED, WAITING = "COMPLETED", "FAILED", "CANCELLED", "WAITING"


class CreatesSessions(Protocol):
    """`SessionService.create`, as far as child sessions need it."""

    async def create(
        self,
        tenant_id: str,
        config_id: str,
        *,
        config_revision: int = 0,
        start: bool = False,
        parent_session_id: str = "",
        agent: str = "",
        overrides: str = "",
    ) -> Session: ...


class Accepted(Protocol):
    """A started turn: its id."""

    @property
    def turn_id(self) -> str: ...


class SendsMessages(Protocol):
    """`TurnService.send`: accepts a message and starts its turn on this replica."""

    async def send(
        self,
        tenant_id: str,
        session_id: str,
        content: str,
        *,
        request_id: str = "",
        turn_context: Mapping[str, Any] | None = None,
    ) -> Accepted: ...


class JoinsTurns(Protocol):
    """The replica's turn runner, as far as waiting for and cancelling a child goes."""

    async def join(self, turn_id: str) -> None:
        """Returns when the turn has ended here; cancelling the caller leaves it running."""

    def cancel_local(self, turn_id: str) -> bool:
        """Cancels the turn if it runs here."""


@dataclass(frozen=True)
class AgentLimits:
    """How far delegation may go (TANDEM_AGENTS_*)."""

    # A session a client made is at depth 0; its children at 1, theirs at 2, ...
    max_depth: int = 3
    # Agent turns one parent turn runs at once; more calls wait for a slot.
    max_concurrent: int = 4
    # How long a cancelled parent waits for its children to record their end.
    cancel_wait_seconds: float = 10.0


@dataclass(frozen=True)
class ParentTurn:
    """The turn that calls agents, and what it hands them."""

    tenant_id: str
    session_id: str
    parent_session_id: str
    config_id: str
    config_revision: int
    # The parent's overrides: its children run agents of the bundle they compose to.
    overrides: str
    bundle: PreparedBundle
    record: Callable[[EventBody], Awaitable[None]]
    transcript: Callable[[], Sequence[ChatMessage]]


async def ancestors(
    uow: SessionUoW, tenant_id: str, parent_session_id: str, limit: int
) -> list[str]:
    """The chain of sessions that started a child session, nearest first, at most limit
    long; the walk ends at a session no one started (or one deleted meanwhile)."""
    chain: list[str] = []
    parent = parent_session_id
    while parent and len(chain) < limit:
        chain.append(parent)
        found = await uow.sessions.get(tenant_id, parent)
        parent = found.parent_session_id if found is not None else ""
    return chain


class AgentLauncher:
    """Makes each turn's AgentHost; one per replica."""

    def __init__(
        self,
        unit_of_work: SessionUoWFactory,
        sessions: CreatesSessions,
        turns: Callable[[], SendsMessages],
        runner: JoinsTurns,
        limits: AgentLimits | None = None,
    ) -> None:
        self.unit_of_work = unit_of_work
        self.sessions = sessions
        # The turn service is built after the runner that owns this launcher.
        self.turns = turns
        self.runner = runner
        self.limits = limits or AgentLimits()

    def host(self, parent: ParentTurn) -> ChildAgents:
        """The AgentHost of one parent turn."""
        return ChildAgents(self, parent)


class ChildAgents:
    """Runs the agents of one parent turn as child sessions."""

    def __init__(self, launcher: AgentLauncher, parent: ParentTurn) -> None:
        self._launcher = launcher
        self._parent = parent
        self._slots = asyncio.Semaphore(launcher.limits.max_concurrent)

    @property
    def agents(self) -> Sequence[AgentInfo]:
        """The agents of the parent's bundle."""
        return [AgentInfo(a.name, a.description) for a in self._parent.bundle.agents]

    def transcript(self) -> Sequence[ChatMessage]:
        """The parent's conversation so far."""
        return self._parent.transcript()

    async def run(self, agent: str, instruction: str, *, session_id: str = "") -> AgentRun:
        """One agent turn in a new or continued child session; see AgentHost.run."""
        parent = self._parent
        tool_call_id = CURRENT_TOOL_CALL.get()
        if session_id:
            child = await self._earlier_child(session_id)
            agent = child.agent
        else:
            self._check_agent(agent)
            await self._check_depth()
        async with self._slots:
            launcher = self._launcher
            try:
                if not session_id:
                    child = await launcher.sessions.create(
                        parent.tenant_id,
                        parent.config_id,
                        config_revision=parent.config_revision,
                        start=True,
                        parent_session_id=parent.session_id,
                        agent=agent,
                        overrides=parent.overrides,
                    )
                accepted = await launcher.turns().send(
                    parent.tenant_id, child.session_id, instruction
                )
            except TandemError as exc:
                raise AgentRefused(f"the agent could not start: {exc.message}") from None
            turn_id = accepted.turn_id
            await parent.record(
                AgentStarted(tool_call_id, agent, child.session_id, turn_id, bool(session_id))
            )
            try:
                await launcher.runner.join(turn_id)
            except asyncio.CancelledError:
                # A cancel can arrive twice (the request, and the writer noticing its flag):
                # the child is still taken down, and recorded, before the parent ends.
                ending = asyncio.ensure_future(
                    self._cancel(tool_call_id, agent, child.session_id, turn_id)
                )
                while not ending.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(ending)
                raise
            run = await self._outcome(child.session_id, turn_id)
            await parent.record(
                AgentCompleted(
                    tool_call_id, agent, child.session_id, turn_id, run.outcome, run.error
                )
            )
            return run

    async def _cancel(self, tool_call_id: str, agent: str, session_id: str, turn_id: str) -> None:
        """Cancels the child's turn with the parent's, and waits (a while) for it to end."""
        launcher = self._launcher
        launcher.runner.cancel_local(turn_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(launcher.limits.cancel_wait_seconds):
                await launcher.runner.join(turn_id)
        # The parent ends now; recording this is best effort, its own end is what counts.
        with contextlib.suppress(Exception):
            await self._parent.record(
                AgentCompleted(
                    tool_call_id, agent, session_id, turn_id, CANCELLED, "the parent was cancelled"
                )
            )

    def _check_agent(self, agent: str) -> None:
        names = [a.name for a in self._parent.bundle.agents]
        if agent not in names and agent != SELF_AGENT:
            available = ", ".join(sorted(names)) or "none"
            raise AgentRefused(f"no agent named {agent!r}; available agents: {available}")

    async def _check_depth(self) -> None:
        """Refuses a child deeper than the operator allows; the parent chain is read."""
        limit = self._launcher.limits.max_depth
        own = spawn_max_depth(self._parent.bundle)
        if own is not None:
            limit = min(limit, own)
        async with self._launcher.unit_of_work() as uow:
            chain = await ancestors(
                uow, self._parent.tenant_id, self._parent.parent_session_id, limit + 1
            )
        if len(chain) + 1 > limit:
            raise AgentRefused(
                f"agents may be nested at most {limit} deep here (the server's "
                "TANDEM_AGENTS_MAX_DEPTH, or the bundle's spawn.max_depth); do this part of "
                "the work yourself"
            )

    async def _earlier_child(self, session_id: str) -> Session:
        async with self._launcher.unit_of_work() as uow:
            child = await uow.sessions.get(self._parent.tenant_id, session_id)
        # Another session's children, or any other session, look the same: not found.
        if child is None or child.parent_session_id != self._parent.session_id:
            raise AgentRefused(f"no agent session {session_id!r} was started by this session")
        return child

    async def _outcome(self, session_id: str, turn_id: str) -> AgentRun:
        """How the child's turn ended, read from its log."""
        tenant = self._parent.tenant_id
        async with self._launcher.unit_of_work() as uow:
            turn = await uow.turns.get(tenant, session_id, turn_id)
            last = await uow.events.at(tenant, session_id, turn.last_sequence) if turn else None
        if turn is not None and turn.status is TurnStatus.WAITING:
            # The agent paused for a person's approval: its session can be continued later.
            return AgentRun(
                session_id,
                turn_id,
                WAITING,
                "",
                "it waits for approval (DecideApproval on its session); continue it later "
                "with its session_id",
            )
        body = last.body if last is not None and last.turn_id == turn_id else None
        if isinstance(body, TurnCompleted):
            return AgentRun(session_id, turn_id, COMPLETED, body.message.content)
        if isinstance(body, TurnFailed):
            return AgentRun(session_id, turn_id, FAILED, "", f"{body.code}: {body.message}")
        if isinstance(body, TurnCancelled):
            partial = body.partial_message.content if body.partial_message else ""
            return AgentRun(session_id, turn_id, CANCELLED, partial, body.reason)
        return AgentRun(session_id, turn_id, FAILED, "", "the agent's turn did not finish")

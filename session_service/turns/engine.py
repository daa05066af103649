"""The turn engine: the orchestrator loop of one turn, run in the background on this replica.

A turn builds the context (instruction plus transcript), streams the provider, runs the tool
calls it asks for (each with a timeout), and loops until the provider stops or the loop's
max_iterations is reached. Every event goes through the turn's EventWriter, so it is in the
log before any client sees it. A turn does not depend on the client that started it: it
goes on when that client leaves, and ends only by finishing, failing or being cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from session_service.ports import SessionUoWFactory
from session_service.prepare.model import PreparedBundle, ResolvedModule
from session_service.prepare.modules import load_factory
from session_service.prepare.spawn import for_agent, spawn_exclusions
from session_service.sessions.model import Message, Role, ToolCall, display_name_problem
from session_service.telemetry import TurnInstruments
from session_service.turns import model as log  # the log's events, beside the provider's
from session_service.turns.agents import (
    AgentLauncher,
    AgentLimits,
    CreatesSessions,
    ParentTurn,
    SendsMessages,
    ancestors,
)
from session_service.turns.log import NextTurn
from session_service.turns.model import Approval, ApprovalStatus, TurnStatus
from session_service.turns.protocols import (
    CURRENT_TOOL_CALL,
    DEFAULT_MAX_ITERATIONS,
    AgentHost,
    ChatMessage,
    ContextModule,
    Finish,
    Hook,
    HookResult,
    LoopSettings,
    Orchestrator,
    Provider,
    ProviderError,
    ProviderRequest,
    TextDelta,
    ThinkingDelta,
    Tool,
    ToolCallDelta,
    ToolCallRequest,
    ToolResult,
    ToolSpec,
    TurnContext,
    UsageReport,
)
from session_service.turns.signals import TurnSignals
from session_service.turns.writer import (
    EventWriter,
    StorageUnavailable,
    TurnLost,
    WriteProblem,
    WriterOptions,
)
from session_service.workspace import Sandbox, Workspaces
from shared.clock import utcnow
from shared.db.faults import is_transient
from shared.errors import FailedPrecondition, TandemError

_log = logging.getLogger(__name__)

MAX_ITERATIONS_STOP = "max_iterations"
NOT_STORED = "EVENT_NOT_STORED"
# How long a stopping replica keeps retrying the final events of its turns.
STOP_RETRY_SECONDS = 3.0


@dataclass(frozen=True)
class TurnJob:
    """Everything a turn needs to run, decided when it was accepted."""

    tenant_id: str
    session_id: str
    turn_id: str
    config_id: str
    config_revision: int
    last_sequence: int
    message_count: int
    # The session's overrides, composed over its config revision (Session.overrides). No
    # default: a turn prepared without its session's overrides would run another bundle.
    overrides: str
    turn_context: Mapping[str, Any] = field(default_factory=dict)
    # Set in a child session: the agent of the parent's bundle it runs, and the parent.
    agent: str = ""
    parent_session_id: str = ""
    # A turn that waited for approvals and now goes on: it answers its pending tool calls
    # (as decided) before it calls the model again.
    resume: bool = False

    @classmethod
    def after(cls, follows: NextTurn) -> TurnJob:
        """The job of a queued turn begun in the transaction that ended the one before it."""
        session = follows.session
        return cls(
            tenant_id=follows.tenant_id,
            session_id=session.session_id,
            turn_id=follows.turn_id,
            config_id=session.config_id,
            config_revision=session.config_revision,
            last_sequence=follows.last_sequence,
            message_count=follows.message_count,
            overrides=session.overrides,
            turn_context=dict(follows.turn_context),
            agent=session.agent,
            parent_session_id=session.parent_session_id,
        )


@dataclass
class _Modules:
    provider: Provider
    context: ContextModule
    loop: LoopSettings
    tools: dict[str, Tool]
    specs: list[ToolSpec]
    hooks: list[Hook]


def _load(module: ResolvedModule, *scope: Any) -> Any:
    return load_factory(module.implementation)(dict(module.config), *scope)


def _agent_bundle(bundle: PreparedBundle, agent: str) -> PreparedBundle:
    """A child session's bundle: its agent composed over the parent's (see prepare.spawn)."""
    try:
        return for_agent(bundle, agent, spawn_exclusions(bundle))
    except KeyError:
        raise FailedPrecondition(
            f"The session runs agent {agent!r}, which its config revision no longer offers.",
            reason="AGENT_NOT_FOUND",
        ) from None


def _instantiate(
    bundle: PreparedBundle, sandbox: Sandbox, agents: AgentHost | None = None
) -> _Modules:
    by_kind: dict[str, list[ResolvedModule]] = {}
    for module in bundle.modules:
        by_kind.setdefault(module.kind, []).append(module)
    if not by_kind.get("provider"):
        raise ProviderError("NO_PROVIDER", "The session's config names no provider module.")
    # The default provider: the lowest priority, the outer bundle first (see preparation).
    chosen = [m for m in by_kind["provider"] if m.field == bundle.default_provider_field]
    provider: Provider = _load((chosen or by_kind["provider"])[0])
    context: ContextModule = _load(by_kind["context"][0])
    orchestrator: Orchestrator = _load(by_kind["orchestrator"][0])
    settings: LoopSettings = orchestrator.settings
    if settings.max_iterations is None:
        session = bundle.document.get("session") or {}
        configured = session.get("max_iterations") if isinstance(session, Mapping) else None
        settings = LoopSettings(
            configured
            if isinstance(configured, int) and configured > 0
            else DEFAULT_MAX_ITERATIONS,
            settings.tool_timeout_seconds,
            settings.stream_deltas,
        )
    tools: dict[str, Tool] = {}
    specs: list[ToolSpec] = []
    for module in by_kind.get("tool", []):
        # Tools touch the host, so each gets the session's sandbox, never more.
        if getattr(load_factory(module.implementation), "AGENTS", False):
            if agents is None:
                raise ProviderError(
                    "AGENTS_UNAVAILABLE", f"{module.module} needs agents, which cannot run here."
                )
            tool: Tool = load_factory(module.implementation)(
                dict(module.config), sandbox, agents=agents
            )
        else:
            tool = _load(module, sandbox)
        for spec in tool.specs():
            # The first module to offer a name keeps it; the model sees each name once.
            if spec.name not in tools:
                tools[spec.name] = tool
                specs.append(spec)
    # Hooks get the sandbox too: some keep or read session state (the todo list).
    hooks: list[Hook] = [_load(module, sandbox) for module in by_kind.get("hook", [])]
    return _Modules(provider, context, settings, tools, specs, hooks)


def with_injected_context(
    messages: Sequence[ChatMessage], texts: Sequence[str]
) -> list[ChatMessage]:
    """messages with hook context added for one model call.

    Appended to a trailing tool result, so the model reads it as part of what just happened
    and role order stays valid for every provider; otherwise a user message of its own.
    """
    text = "\n\n".join(texts)
    result = list(messages)
    if result and result[-1].role == "tool":
        last = result[-1]
        result[-1] = dataclasses.replace(last, content=f"{last.content}\n\n{text}")
    else:
        result.append(ChatMessage("user", text))
    return result


def _unanswered(stored: Sequence[Message], turn_id: str) -> list[ToolCallRequest]:
    """The tool calls of the turn's last model response that have no result yet."""
    asked = next(
        (
            m
            for m in reversed(stored)
            if m.role is Role.ASSISTANT and m.turn_id == turn_id and m.tool_calls
        ),
        None,
    )
    if asked is None:
        return []
    answered = {m.tool_call_id for m in stored if m.role is Role.TOOL}
    return [
        ToolCallRequest(c.tool_call_id, c.name, c.arguments_json)
        for c in asked.tool_calls
        if c.tool_call_id not in answered
    ]


def _chat(message: Message) -> ChatMessage:
    if message.role is Role.ASSISTANT:
        return ChatMessage(
            "assistant",
            message.content,
            tool_calls=tuple(
                ToolCallRequest(c.tool_call_id, c.name, c.arguments_json)
                for c in message.tool_calls
            ),
        )
    if message.role is Role.TOOL:
        return ChatMessage("tool", message.content, tool_call_id=message.tool_call_id)
    # Operator notes (SYSTEM) reach the model as user-side context.
    return ChatMessage("user", message.content)


# The longest parent chain a turn looks up for its workspace; far past any depth cap.
MAX_AGENT_CHAIN = 32


class TurnRunner:
    """Runs accepted turns as background tasks of this replica and cancels them on request."""

    def __init__(
        self,
        unit_of_work: SessionUoWFactory,
        prepare: Callable[[str, str, int, str], Any],
        signals: TurnSignals,
        options: WriterOptions | None = None,
        instruments: TurnInstruments | None = None,
        *,
        workspaces: Workspaces,
        sessions: CreatesSessions | None = None,
        turns: Callable[[], SendsMessages] | None = None,
        agent_limits: AgentLimits | None = None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._workspaces = workspaces
        # Agents run as child sessions, made and started through the session and turn use
        # cases; without them (tests of the runner alone) agent calls are refused.
        self._agents = (
            AgentLauncher(unit_of_work, sessions, turns, self, agent_limits)
            if sessions is not None and turns is not None
            else None
        )
        self._instruments = instruments or TurnInstruments.off()
        self._prepare = prepare
        self._signals = signals
        self._options = options or WriterOptions()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._writers: dict[str, EventWriter] = {}
        # Log transactions written by finished turns (for tests and metrics).
        self.flushes = 0
        # Set when this replica stops: cancelled turns then fail instead of counting as cancelled.
        self.stopping = False

    @property
    def active(self) -> int:
        """How many turns run in this process."""
        return len(self._tasks)

    def start(self, job: TurnJob) -> None:
        """Runs job in the background; it outlives the RPC that started it."""
        task = asyncio.create_task(self._run(job), name=f"turn:{job.turn_id}")
        self._tasks[job.turn_id] = task
        task.add_done_callback(lambda done: self._forget(job.turn_id, done))

    def start_next(self, follows: NextTurn) -> None:
        """Runs a queued turn this replica began when it ended the turn before it."""
        self.start(TurnJob.after(follows))

    def _forget(self, turn_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(turn_id, None)
        # A turn ends its own failures; anything left is a bug, logged here rather than as
        # "Task exception was never retrieved" whenever the task happens to be collected.
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.error("turn %s ended with an unexpected error", turn_id, exc_info=error)

    def runs(self, turn_id: str) -> bool:
        """Whether the turn runs in this process."""
        task = self._tasks.get(turn_id)
        return task is not None and not task.done()

    def on_cancel_payload(self, payload: str | None) -> None:
        """A NOTIFY on the cancel channel (its payload a turn id): cancel it if it runs here.

        None: the listener (re)connected, and requests made meanwhile went unheard, so every
        turn here re-reads its cancel flag.
        """
        if payload:
            self.cancel_local(payload)
            return
        for writer in self._writers.values():
            writer.check_cancel_soon()

    def cancel_local(self, turn_id: str) -> bool:
        """Cancels the turn if it runs here; True when it did."""
        task = self._tasks.get(turn_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def join(self, turn_id: str) -> None:
        """Returns when the turn (if it runs here) has ended; cancelling the caller raises in
        the caller and leaves the turn running."""
        task = self._tasks.get(turn_id)
        if task is not None and not task.done():
            await asyncio.wait({task})

    async def wait(self, turn_id: str) -> None:
        """Returns when the turn (if it runs here) has ended."""
        task = self._tasks.get(turn_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def shutdown(self, grace: float = 0.0) -> None:
        """Lets running turns finish for up to grace seconds, then fails the rest cleanly.

        A turn ended this way gets TurnFailed REPLICA_STOPPED (not TurnCancelled: nobody
        asked to cancel it), with its partial reply kept, so the session takes new turns on
        any other replica at once.
        """
        tasks = list(self._tasks.values())
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        self.stopping = True
        for writer in self._writers.values():
            # Ending the rest must not wait out a long database outage; their leases run
            # out and another replica fails them instead.
            writer.hurry(STOP_RETRY_SECONDS)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: TurnJob) -> None:
        writer = EventWriter(
            self._unit_of_work,
            self._signals,
            job.tenant_id,
            job.session_id,
            job.turn_id,
            job.last_sequence,
            job.message_count,
            self._options,
            on_cancel_requested=lambda: self.cancel_local(job.turn_id),
            # The replica that ends a turn runs the queued turn that begins with its end.
            start_next=self.start_next,
        )
        writer.start()
        self._writers[job.turn_id] = writer
        turn = _Turn(
            job,
            writer,
            self._unit_of_work,
            self._prepare,
            lambda: self.stopping,
            self._instruments,
            lambda owner: self._workspaces.sandbox(job.tenant_id, job.session_id, owner),
            self._agents,
        )
        started = time.perf_counter()
        # The task was started inside SendMessage, so this span is a child of that RPC's.
        with self._instruments.tracer.start_as_current_span(
            "tandem.turn",
            attributes={
                "tandem.session.id": job.session_id,
                "tandem.turn.id": job.turn_id,
                "tandem.config.id": job.config_id,
                "tandem.config.revision": job.config_revision,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await turn.run()
            finally:
                await writer.stop()
                self._writers.pop(job.turn_id, None)
                self.flushes += writer.flushes
                span.set_attribute("tandem.turn.status", turn.status)
                if turn.status not in ("COMPLETED", "WAITING"):
                    span.set_status(StatusCode.ERROR, turn.failure or turn.status)
                self._instruments.duration.record(
                    time.perf_counter() - started, {"tandem.turn.status": turn.status}
                )


class _Turn:
    """The state of one running turn."""

    def __init__(
        self,
        job: TurnJob,
        writer: EventWriter,
        unit_of_work: SessionUoWFactory,
        prepare: Callable[[str, str, int, str], Any],
        stopping: Callable[[], bool],
        instruments: TurnInstruments,
        sandbox: Callable[[str], Sandbox],
        agents: AgentLauncher | None = None,
    ) -> None:
        self._job = job
        self._sandbox = sandbox
        self._agents = agents
        self._stopping = stopping
        self._instruments = instruments
        self._started = time.perf_counter()
        self._first_event_seen = False
        # How the turn ended, for its span and duration metric.
        self.status = "CANCELLED"
        self.failure = ""
        self._writer = writer
        self._unit_of_work = unit_of_work
        self._prepare = prepare
        self._text: list[str] = []
        self._hooks: list[Hook] = []
        self._provider: Provider | None = None
        # The conversation as the model sees it, once the turn has read it.
        self._conversation: list[ChatMessage] = []

    async def run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            # Cancelled by a CancelTurn, by this replica stopping, or by the writer when it
            # cannot go on; its problem, if any, says which.
            await asyncio.shield(self._end_interrupted())
            raise
        except WriteProblem:
            await self._after_write_problem()
        except ProviderError as exc:
            await self._ending(self._end_failed, exc.code, exc.message)
        except TandemError as exc:
            await self._ending(self._end_failed, exc.reason, exc.message)
        except Exception:
            _log.exception("turn %s failed unexpectedly", self._job.turn_id)
            await self._ending(self._end_failed, "INTERNAL", "The turn failed unexpectedly.")
        finally:
            await self._close_provider()

    async def _end_interrupted(self) -> None:
        if self._writer.problem is not None:
            await self._after_write_problem()
        elif self._stopping():
            await self._ending(
                self._end_failed,
                "REPLICA_STOPPED",
                "The replica running this turn shut down before it ended; send the message again.",
            )
        else:
            await self._ending(self._end_cancelled)

    async def _ending(self, end: Callable[..., Awaitable[None]], *args: str) -> None:
        """Ends the turn one way; when that cannot be written, as the writer's problem allows."""
        try:
            await end(*args)
        except WriteProblem:
            await self._after_write_problem()

    async def _after_write_problem(self) -> None:
        problem = self._writer.problem
        if isinstance(problem, TurnLost):
            # Someone else wrote this turn's final event; anything more would collide.
            self.status, self.failure = "FAILED", "TURN_LOST"
            return
        if isinstance(problem, StorageUnavailable) or problem is None:
            # Nothing can be written; the lease runs out and a reader fails the turn.
            self.status, self.failure = "FAILED", "STORAGE_UNAVAILABLE"
            return
        # The database refused what was queued, which the writer dropped. The bare failure,
        # without the partial reply that may be what it refused, can be stored.
        self._text = []
        try:
            await self._end_failed(
                NOT_STORED,
                "The turn produced output that could not be stored; it was stopped.",
            )
        except WriteProblem as exc:
            _log.error(
                "turn %s: even its final event could not be stored (%s)",
                self._job.turn_id,
                type(exc).__name__,
            )
            self.status, self.failure = "FAILED", NOT_STORED

    async def _close_provider(self) -> None:
        # Providers hold HTTP connection pools; a turn's provider is released with the turn.
        close = getattr(self._provider, "aclose", None)
        if close is not None:
            try:
                await asyncio.shield(close())
            except Exception as exc:
                _log.warning("closing the provider failed", exc_info=exc)

    async def _loop(self) -> None:
        job = self._job
        bundle: PreparedBundle = await self._prepare(
            job.tenant_id, job.config_id, job.config_revision, job.overrides
        )
        if job.agent:
            bundle = _agent_bundle(bundle, job.agent)
        transcript: list[ChatMessage] = []
        self._conversation = transcript
        host = None
        if self._agents is not None:
            host = self._agents.host(
                ParentTurn(
                    job.tenant_id,
                    job.session_id,
                    job.parent_session_id,
                    job.config_id,
                    job.config_revision,
                    job.overrides,
                    bundle,
                    self._writer.add,
                    lambda: tuple(transcript),
                )
            )
        sandbox = await asyncio.to_thread(self._sandbox, await self._workspace_owner())
        modules = _instantiate(bundle, sandbox, host)
        self._provider = modules.provider
        self._hooks = modules.hooks
        await self._hook("turn_start", {"turn_id": job.turn_id, "session_id": job.session_id})
        stored = await self._transcript()
        transcript.extend(_chat(m) for m in stored)
        limit = modules.loop.max_iterations or DEFAULT_MAX_ITERATIONS
        # Model calls this turn made before it paused count against its limit.
        used = sum(1 for m in stored if m.role is Role.ASSISTANT and m.turn_id == job.turn_id)
        if job.resume:
            pending = _unanswered(stored, job.turn_id)
            if pending and await self._answer(modules, pending, transcript, resumed=True):
                return
        while used < limit:
            used += 1
            system, messages = modules.context.build(
                TurnContext(bundle.system_instruction, transcript, job.turn_context)
            )
            injected = [
                r.inject_context
                for r in await self._hook("provider_request", {"turn_id": job.turn_id})
                if r.inject_context
            ]
            if injected:
                messages = with_injected_context(messages, injected)
            calls, stop_reason = await self._model_call(
                modules, ProviderRequest(system, messages, modules.specs)
            )
            text = "".join(self._text)
            if not calls:
                await self._end_completed(stop_reason, text)
                return
            assistant = self._writer.add_message(
                Message(
                    message_id=uuid.uuid4().hex,
                    role=Role.ASSISTANT,
                    content=text,
                    sequence=0,
                    create_time=utcnow(),
                    tool_calls=tuple(
                        ToolCall(c.tool_call_id, c.name, c.arguments_json) for c in calls
                    ),
                )
            )
            self._text = []
            transcript.append(_chat(assistant))
            for call in calls:
                await self._writer.add(
                    log.ToolCallStarted(
                        tool_call_id=call.tool_call_id,
                        name=call.name,
                        arguments_json=call.arguments_json,
                    )
                )
            if await self._answer(modules, calls, transcript):
                return
        await self._end_completed(MAX_ITERATIONS_STOP, "")

    async def _answer(
        self,
        modules: _Modules,
        calls: Sequence[ToolCallRequest],
        transcript: list[ChatMessage],
        *,
        resumed: bool = False,
    ) -> bool:
        """Runs (or refuses) one model response's tool calls and adds their results; True
        when some call needs a person's approval, and the turn paused instead."""
        decided = await self._decisions() if resumed else {}
        denied: dict[str, str] = {}
        waiting: list[tuple[ToolCallRequest, float | None]] = []
        for call in calls:
            approval = decided.get(call.tool_call_id)
            if approval is not None:
                if approval.status is not ApprovalStatus.APPROVED:
                    denied[call.tool_call_id] = approval.reason or "the approval was denied"
                continue
            verdict = await self._approval(call)
            if verdict.approval == "deny":
                denied[call.tool_call_id] = verdict.reason or "denied by the bundle's rules"
            elif verdict.approval == "required":
                waiting.append((call, verdict.approval_timeout_seconds))
        if waiting:
            await self._pause(waiting)
            return True
        results = await self._run_tools(modules, calls, denied)
        for call, result in zip(calls, results, strict=True):
            tool_message = self._writer.add_message(
                Message(
                    message_id=uuid.uuid4().hex,
                    role=Role.TOOL,
                    content=result.content,
                    sequence=0,
                    create_time=utcnow(),
                    tool_call_id=call.tool_call_id,
                )
            )
            transcript.append(
                ChatMessage(
                    "tool",
                    tool_message.content,
                    tool_call_id=call.tool_call_id,
                    is_error=result.is_error,
                )
            )
        return False

    async def _approval(self, call: ToolCallRequest) -> HookResult:
        """What the hooks say of one call: a denial wins, then a required approval."""
        try:
            arguments: Any = json.loads(call.arguments_json or "{}")
        except ValueError:
            arguments = {}
        results = await self._hook(
            "tool_approval",
            {
                "turn_id": self._job.turn_id,
                "tool_call_id": call.tool_call_id,
                "name": call.name,
                "arguments": arguments if isinstance(arguments, dict) else {},
            },
        )
        denials = [r for r in results if r.approval == "deny"]
        if denials:
            return denials[0]
        required = [r for r in results if r.approval == "required"]
        if not required:
            return HookResult()
        limits = [r.approval_timeout_seconds for r in required if r.approval_timeout_seconds]
        return HookResult(
            approval="required", approval_timeout_seconds=min(limits) if limits else None
        )

    async def _pause(self, waiting: Sequence[tuple[ToolCallRequest, float | None]]) -> None:
        """Stores the approvals the turn waits on, with ApprovalRequested for each, and the
        turn as WAITING, in one transaction; the turn's task then ends."""
        now = utcnow()
        approvals = [
            Approval(
                session_id=self._job.session_id,
                turn_id=self._job.turn_id,
                tool_call_id=call.tool_call_id,
                name=call.name,
                arguments_json=call.arguments_json,
                status=ApprovalStatus.PENDING,
                create_time=now,
                expire_time=now + timedelta(seconds=timeout) if timeout else None,
            )
            for call, timeout in waiting
        ]
        for approval in approvals:
            await self._writer.add(
                log.ApprovalRequested(
                    tool_call_id=approval.tool_call_id,
                    name=approval.name,
                    arguments_json=approval.arguments_json,
                    expire_time=approval.expire_time,
                ),
                hold=True,
            )
        await self._writer.flush(waiting=approvals)
        self.status = "WAITING"

    async def _decisions(self) -> dict[str, Approval]:
        async with self._unit_of_work() as uow:
            approvals = await uow.approvals.of_turn(
                self._job.tenant_id, self._job.session_id, self._job.turn_id
            )
        return {a.tool_call_id: a for a in approvals}

    async def _workspace_owner(self) -> str:
        """Whose workspace the turn works in: its own, or for an agent's child session, that
        of the session that started the chain, so agents see and leave the same files."""
        if not self._job.parent_session_id:
            return self._job.session_id
        async with self._unit_of_work() as uow:
            # Bounded: a chain is as deep as TANDEM_AGENTS_MAX_DEPTH allows.
            chain = await ancestors(
                uow, self._job.tenant_id, self._job.parent_session_id, MAX_AGENT_CHAIN
            )
        return chain[-1]

    async def _transcript(self) -> list[Message]:
        # A database blip as the turn starts is waited out like one during its writes.
        delay = 0.05
        for _ in range(8):
            try:
                return await self._read_transcript()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return await self._read_transcript()

    async def _read_transcript(self) -> list[Message]:
        messages: list[Message] = []
        async with self._unit_of_work() as uow:
            while True:
                page = await uow.messages.page(
                    self._job.tenant_id, self._job.session_id, len(messages), 1000
                )
                messages.extend(page)
                if len(page) < 1000:
                    return messages

    async def _model_call(
        self, modules: _Modules, request: ProviderRequest
    ) -> tuple[list[ToolCallRequest], str]:
        with self._instruments.tracer.start_as_current_span(
            "tandem.provider.stream",
            attributes={"gen_ai.system": modules.provider.name},
        ) as span:
            return await self._stream_model(modules, request, span)

    async def _stream_model(
        self, modules: _Modules, request: ProviderRequest, span: trace.Span
    ) -> tuple[list[ToolCallRequest], str]:
        calls: list[ToolCallRequest] = []
        stop_reason = ""
        streamed = modules.loop.stream_deltas
        stream = modules.provider.stream(request)
        try:
            async for event in stream:
                if not self._first_event_seen:
                    self._first_event_seen = True
                    self._instruments.first_event.record(
                        time.perf_counter() - self._started,
                        {"tandem.provider": modules.provider.name},
                    )
                if isinstance(event, TextDelta):
                    self._text.append(event.text)
                    if streamed and event.text:
                        await self._writer.add(log.ContentDelta(text=event.text))
                elif isinstance(event, ThinkingDelta):
                    await self._writer.add(log.ThinkingDelta(text=event.text))
                elif isinstance(event, ToolCallDelta):
                    calls.append(event.call)
                elif isinstance(event, UsageReport):
                    self._count_tokens(modules.provider.name, event, span)
                    await self._writer.add(
                        log.Usage(
                            input_tokens=event.input_tokens,
                            output_tokens=event.output_tokens,
                            provider=modules.provider.name,
                            model=event.model,
                        )
                    )
                elif isinstance(event, Finish):
                    stop_reason = event.stop_reason
        finally:
            # Stops the provider's HTTP stream (or its timer) when we are cancelled.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if not streamed and self._text:
            await self._writer.add(log.ContentDelta(text="".join(self._text)))
        span.set_attribute("gen_ai.response.finish_reasons", [stop_reason or "tool_calls"])
        return calls, stop_reason

    def _count_tokens(self, provider: str, usage: UsageReport, span: trace.Span) -> None:
        for kind, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            self._instruments.tokens.add(
                count, {"tandem.provider": provider, "gen_ai.token.type": kind}
            )
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if usage.model:
            span.set_attribute("gen_ai.response.model", usage.model)

    async def _run_tools(
        self,
        modules: _Modules,
        calls: Sequence[ToolCallRequest],
        denied: Mapping[str, str] | None = None,
    ) -> list[ToolResult]:
        """Runs the calls of one model response in the order the model asked for them, then
        logs each call's ToolCallCompleted in that order. Neighbouring calls to tools that
        may run side by side (agents: PARALLEL_CALLS) run at once; others one at a time, so
        a write and a read of the same file happen in the order asked. A denied call (tool
        call id -> why) does not run: the model gets the reason."""

        async def one(call: ToolCallRequest) -> ToolResult:
            reason = (denied or {}).get(call.tool_call_id)
            if reason is not None:
                return ToolResult(f"The call to {call.name} was denied: {reason}", True)
            return await self._run_tool(modules, call)

        def parallel(call: ToolCallRequest) -> bool:
            tool = modules.tools.get(call.name)
            return bool(getattr(tool, "PARALLEL_CALLS", False))

        results: list[ToolResult] = []
        index = 0
        while index < len(calls):
            batch = [calls[index]]
            while (
                parallel(batch[0])
                and index + len(batch) < len(calls)
                and parallel(calls[index + len(batch)])
            ):
                batch.append(calls[index + len(batch)])
            index += len(batch)
            if len(batch) == 1:
                results.append(await one(batch[0]))
                continue
            # A task group: when the turn is cancelled, every call still running is too.
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(call)) for call in batch]
            results.extend(task.result() for task in tasks)
        for call, result in zip(calls, results, strict=True):
            await self._writer.add(
                log.ToolCallCompleted(
                    tool_call_id=call.tool_call_id,
                    result=result.content,
                    is_error=result.is_error,
                )
            )
        return results

    async def _run_tool(self, modules: _Modules, call: ToolCallRequest) -> ToolResult:
        # Arguments and results stay out of the span: they may carry user data or secrets.
        with self._instruments.tracer.start_as_current_span(
            "tandem.tool.call",
            attributes={"gen_ai.tool.name": call.name, "gen_ai.tool.call.id": call.tool_call_id},
        ) as span:
            result = await self._call_tool(modules, call)
            span.set_attribute("tandem.tool.is_error", result.is_error)
            if result.is_error:
                span.set_status(StatusCode.ERROR)
            return result

    async def _call_tool(self, modules: _Modules, call: ToolCallRequest) -> ToolResult:
        tool = modules.tools.get(call.name)
        CURRENT_TOOL_CALL.set(call.tool_call_id)
        data = {"turn_id": self._job.turn_id, "tool_call_id": call.tool_call_id, "name": call.name}
        await self._hook("tool_call_start", data)
        if tool is None:
            result = ToolResult(f"No tool named {call.name!r} is available.", is_error=True)
        else:
            try:
                arguments = json.loads(call.arguments_json or "{}")
                if not isinstance(arguments, dict):
                    raise ValueError("arguments must be a JSON object")
            except ValueError as exc:
                result = ToolResult(f"Invalid arguments for {call.name}: {exc}", is_error=True)
            else:
                # A tool that bounds its own calls (an agent's turn) is not cut short here.
                own = getattr(tool, "RUNS_OWN_TIMEOUT", False)
                timeout = modules.loop.tool_timeout_seconds
                try:
                    async with asyncio.timeout(None if own else timeout):
                        result = await tool.call(call.name, arguments)
                except TimeoutError:
                    result = ToolResult(
                        f"{call.name} did not finish within {timeout:g}s.", is_error=True
                    )
                except Exception as exc:
                    _log.warning("tool %s raised", call.name, exc_info=exc)
                    result = ToolResult(f"{call.name} failed: {type(exc).__name__}", True)
        await self._hook("tool_call_end", {**data, "is_error": result.is_error})
        return result

    async def _hook(self, event: str, data: Mapping[str, Any]) -> list[HookResult]:
        """Tells every hook; what they ask of the turn, in hook order."""
        results: list[HookResult] = []
        for hook in self._hooks:
            try:
                result = await hook.on_event(event, data)
            except Exception as exc:
                _log.warning("hook failed on %s", event, exc_info=exc)
                continue
            if isinstance(result, HookResult):
                results.append(result)
        return results

    def _turn_end(self, status: str) -> dict[str, Any]:
        users = [m.content for m in self._conversation if m.role == "user"]
        return {
            "turn_id": self._job.turn_id,
            "status": status,
            "user_turns": len(users),
            "first_user_message": users[0] if users else "",
        }

    def _assistant(self, text: str) -> Message:
        return self._writer.add_message(
            Message(
                message_id=uuid.uuid4().hex,
                role=Role.ASSISTANT,
                content=text,
                sequence=0,
                create_time=utcnow(),
            )
        )

    async def _end_completed(self, stop_reason: str, text: str) -> None:
        message = self._assistant(text)
        await self._writer.add(
            log.TurnCompleted(stop_reason=stop_reason or "end_turn", message=message)
        )
        # Asked before the end is stored, so a name lands with it: a client that saw the
        # turn complete sees the name too.
        ending = await self._hook("turn_ending", self._turn_end("COMPLETED"))
        name = next(
            (
                r.session_name
                for r in ending
                if r.session_name and not display_name_problem(r.session_name)
            ),
            "",
        )
        await self._writer.flush(end=TurnStatus.COMPLETED, display_name=name)
        self.status = "COMPLETED"
        await self._hook("turn_end", self._turn_end("COMPLETED"))

    async def _end_failed(self, code: str, detail: str) -> None:
        if self._text:
            self._assistant("".join(self._text))
        await self._writer.add(log.TurnFailed(code=code, message=detail))
        await self._writer.flush(end=TurnStatus.FAILED)
        self.status, self.failure = "FAILED", code
        await self._hook("turn_end", self._turn_end("FAILED"))

    async def _end_cancelled(self) -> None:
        # The partial reply is kept: it is what the user saw.
        partial = self._assistant("".join(self._text)) if self._text else None
        await self._writer.add(log.TurnCancelled(reason="cancelled", partial_message=partial))
        await self._writer.flush(end=TurnStatus.CANCELLED)
        await self._hook("turn_end", self._turn_end("CANCELLED"))

"""SessionService's session use cases: create, read, lifecycle, transcript, lifetimes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from session_service.ports import SessionUoW, SessionUoWFactory
from session_service.prepare.model import PreparedBundle
from session_service.prepare.overrides import InvalidOverrides
from session_service.sessions.model import (
    ENDING_TRANSITIONS,
    Message,
    Role,
    Session,
    Status,
    ToolCall,
    Transition,
    check_display_name,
    check_message,
    check_session_id,
    check_tags,
    next_status,
    session_from_json,
    session_to_json,
)
from session_service.turns import log
from session_service.turns.model import TurnStatus
from session_service.turns.reaping import fail_abandoned, lease_expired
from session_service.turns.signals import Deadlines
from session_service.workspace import Workspaces
from shared.clock import utcnow
from shared.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from shared.idempotency import check_request_id, fingerprint, first_response
from shared.listing import (
    Page,
    decode_page_token,
    invalid_page_token,
    page_of,
    page_scope,
    page_size,
    parse_filter,
)
from shared.quotas import PolicyLookup, check_count, unlimited
from shared.visibility import Visibility, caller

FILTER_FIELDS = ("config_id", "status", "parent_session_id", "agent")
FILTER_PREFIXES = ("tags.",)
CREATE_METHOD = "CreateSession"
MAX_ERROR_MESSAGE = 4096

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionLifetimes:
    """How long sessions live: the defaults CreateSession applies (the ceiling on ttl is a
    per-tenant quota).

    All in seconds; 0 is none (no idle limit, never deleted).
    """

    default_ttl: float = 0.0
    default_delete_after: float = 0.0


class PreparesBundles(Protocol):
    """Turns (config, revision) into a prepared bundle, from cache or from ConfigService."""

    async def prepare(
        self,
        tenant_id: str,
        config_id: str,
        revision: int,
        time_remaining: float | None,
        *,
        overrides: str = "",
    ) -> PreparedBundle: ...


def visible(found: Session | None, session_id: str) -> Session:
    """found, when it exists and the caller may see it; otherwise exactly the NOT_FOUND an
    unknown id gets. Every read and write of a session on a caller's behalf passes here."""
    if found is None or not caller().may_see(found.owner, found.visibility, found.team):
        raise session_not_found(session_id)
    return found


async def visible_session(
    uow: SessionUoW, tenant_id: str, session_id: str, *, for_update: bool = False
) -> Session:
    """The session, if the caller may see it (NOT_FOUND otherwise); for_update locks it."""
    return visible(await uow.sessions.get(tenant_id, session_id, for_update=for_update), session_id)


async def replayed(
    uow: SessionUoW, tenant_id: str, method: str, request_id: str, fingerprint: str
) -> Session | None:
    """The session a create-like request (method) first answered request_id with, if any.

    As it was when it was created; a request_id is the tenant's, so another caller repeating
    it gets nothing it may not see (NOT_FOUND).
    """
    earlier = await uow.idempotency.find(tenant_id, method, request_id, fingerprint)
    if earlier is None:
        return None
    first = session_from_json(json.loads(earlier.response))
    return visible(first, first.session_id)


async def insert_new(
    uow: SessionUoW,
    tenant_id: str,
    session: Session,
    policies: PolicyLookup,
    method: str,
    request_id: str,
    fingerprint: str,
) -> None:
    """Stores a new session, counted against the tenant's sessions quota, and (with a
    request_id) as that request's first response. The caller checked `replayed` first."""
    if request_id:
        await uow.idempotency.record(
            tenant_id,
            method,
            request_id,
            fingerprint,
            json.dumps(session_to_json(session)).encode(),
        )
    held = await uow.sessions.insert(tenant_id, session)
    limit = policies(tenant_id).quotas.sessions
    if limit:
        # Counted under the tenant's count lock: over the quota, the insert rolls back.
        check_count(tenant_id, "sessions", held - 1, limit, "delete sessions it is done with.")


def left_to_its_lease(follows: log.NextTurn) -> None:
    """What a use case built without a turn runner does with a queued turn it began: it
    says so; the turn's lease runs out and the next read fails it (the one after it runs)."""
    _log.warning(
        "queued turn %s of session %s began where no turn runner was given; it fails when "
        "its lease runs out",
        follows.turn_id,
        follows.session.session_id,
    )


def session_not_found(session_id: str) -> NotFound:
    return NotFound(
        f"Session {session_id!r} does not exist.",
        reason="SESSION_NOT_FOUND",
        resource_type="Session",
        resource_name=session_id,
    )


class SessionService:
    """The session domain; the servicer translates to and from it."""

    def __init__(
        self,
        unit_of_work: SessionUoWFactory,
        preparer: PreparesBundles,
        policies: PolicyLookup = unlimited,
        workspaces: Workspaces | None = None,
        lifetimes: SessionLifetimes = SessionLifetimes(),
        deadlines: Deadlines | None = None,
        start_queued: Callable[[log.NextTurn], None] = left_to_its_lease,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._preparer = preparer
        self._policies = policies
        self._workspaces = workspaces
        self._lifetimes = lifetimes
        # Told of the lifetime deadlines this replica sets, so its sweeper wakes for them.
        self.deadlines = deadlines or Deadlines()
        # Runs a queued turn that began when a read here failed the turn before it.
        self._start_queued = start_queued

    async def create(
        self,
        tenant_id: str,
        config_id: str,
        *,
        config_revision: int = 0,
        session_id: str = "",
        tags: Mapping[str, str] | None = None,
        request_id: str = "",
        start: bool = False,
        display_name: str = "",
        parent_session_id: str = "",
        agent: str = "",
        time_remaining: float | None = None,
        announce: bool = False,
        request_method: str = CREATE_METHOD,
        ttl: float | None = None,
        delete_after: float | None = None,
        overrides: str = "",
        visibility: Visibility | None = None,
    ) -> Session:
        """Prepares the config (pinning the revision it gets) and stores a new session.

        A retry with the same request_id and the same request returns the first response;
        the same request_id with another request is refused. parent_session_id and agent
        make a child session that runs one agent for its parent's turns. With announce, the
        session's log starts with SessionCreated (sequence 1), written with the session.
        request_method names the RPC whose request_ids the request_id is one of. ttl and
        delete_after (seconds; None: the service's defaults, 0: none) set how long the
        session may idle and how long it is kept once it ended. overrides, a bundle fragment
        composed last over the config, is validated by preparing it (InvalidOverrides,
        located under "overrides", makes no session) and stored with the session.
        """
        _check_config_reference(config_id, config_revision, "config_revision")
        ttl_seconds, delete_after_seconds = self._lifetime_of(tenant_id, ttl, delete_after)
        # Blank overrides are none: stored as none, and the same request as none.
        overrides = overrides if overrides.strip() else ""
        if session_id:
            check_session_id(session_id)
        if request_id:
            check_request_id(request_id)
        check_tags(tags or {})
        check_display_name(display_name)
        request_fingerprint = _create_fingerprint(
            config_id,
            config_revision,
            session_id,
            tags or {},
            start,
            display_name,
            ttl,
            delete_after,
            overrides,
        )
        if visibility is not None:
            # Folded in only when given, so fingerprints recorded before visibility match.
            request_fingerprint = fingerprint(
                f"{request_fingerprint}\x1fvisibility={visibility.value}".encode()
            )
        if request_id:
            async with self._unit_of_work() as uow:
                replay = await replayed(
                    uow, tenant_id, request_method, request_id, request_fingerprint
                )
            if replay is not None:
                return replay
        prepared = await self._preparer.prepare(
            tenant_id, config_id, config_revision, time_remaining, overrides=overrides
        )
        now = utcnow()
        session = Session(
            session_id=session_id or uuid.uuid4().hex,
            config_id=config_id,
            config_revision=prepared.revision,
            status=Status.ACTIVE if start else Status.CREATED,
            create_time=now,
            update_time=now,
            version=1,
            tags=dict(tags or {}),
            display_name=display_name,
            parent_session_id=parent_session_id,
            agent=agent,
            last_sequence=1 if announce else 0,
            ttl_seconds=ttl_seconds,
            delete_after_seconds=delete_after_seconds,
            overrides=overrides,
            **await self._ownership(tenant_id, parent_session_id, visibility),
        )
        # Creating it is its first activity: the same rule as every later write.
        session = dataclasses.replace(session, **session.lifetime(now, session.status))
        stored = await first_response(
            lambda: self._store_new(
                tenant_id, session, request_method, request_id, request_fingerprint, announce
            )
        )
        self._note(stored)
        return stored

    async def _ownership(
        self, tenant_id: str, parent_session_id: str, visibility: Visibility | None
    ) -> dict[str, Any]:
        """Who a new session belongs to: the caller (PRIVATE unless asked otherwise), or for
        a child session its parent's owner, team and visibility."""
        if parent_session_id:
            async with self._unit_of_work() as uow:
                parent = await uow.sessions.get(tenant_id, parent_session_id)
            if parent is not None:
                return {"owner": parent.owner, "visibility": parent.visibility, "team": parent.team}
        viewer = caller()
        return {
            "owner": viewer.subject,
            "visibility": visibility or Visibility.PRIVATE,
            "team": viewer.team,
        }

    def _lifetime_of(
        self, tenant_id: str, ttl: float | None, delete_after: float | None
    ) -> tuple[float, float]:
        """(ttl, delete_after) in seconds for a new session; INVALID_ARGUMENT located on the
        field when one is negative or the ttl is over the tenant's ceiling."""
        limits = self._lifetimes
        max_ttl = self._policies(tenant_id).quotas.session_ttl_max_seconds
        if ttl is None:
            ttl = limits.default_ttl
            if max_ttl and ttl > max_ttl:
                ttl = max_ttl  # the operator's default never beats the tenant's ceiling
        if delete_after is None:
            delete_after = limits.default_delete_after
        violations = []
        if ttl < 0:
            violations.append(FieldViolation("ttl", "must not be negative"))
        elif max_ttl and ttl > max_ttl:
            violations.append(
                FieldViolation("ttl", f"at most {max_ttl} seconds (the tenant's maximum)")
            )
        if delete_after < 0:
            violations.append(FieldViolation("delete_after", "must not be negative"))
        if violations:
            raise InvalidArgument(
                f"Invalid session lifetime: {violations[0].field} {violations[0].description}.",
                reason="INVALID_SESSION_LIFETIME",
                metadata={"max_ttl_seconds": str(max_ttl)},
                violations=violations,
            )
        return ttl, delete_after

    def _note(self, session: Session) -> None:
        """Tells this replica's sweeper of the session's next lifetime deadline."""
        deadline = session.idle_expire_time or session.delete_time
        if deadline is not None:
            self.deadlines.note(deadline)

    async def prepare_config(
        self, tenant_id: str, config_id: str, revision: int, time_remaining: float | None
    ) -> PreparedBundle:
        """A dry run: prepares (config, revision; 0 the latest) as a session would.

        Raises PreparationFailed with every problem, located, when it cannot be prepared.
        """
        _check_config_reference(config_id, revision, "revision")
        return await self._preparer.prepare(tenant_id, config_id, revision, time_remaining)

    async def _store_new(
        self,
        tenant_id: str,
        session: Session,
        method: str,
        request_id: str,
        fingerprint: str,
        announce: bool,
    ) -> Session:
        async with self._unit_of_work(write=True) as uow:
            if request_id:
                replay = await replayed(uow, tenant_id, method, request_id, fingerprint)
                if replay is not None:
                    return replay
            await insert_new(
                uow, tenant_id, session, self._policies, method, request_id, fingerprint
            )
            if announce:
                await log.created(uow, tenant_id, session)
            await uow.commit()
        return session

    async def get(self, tenant_id: str, session_id: str) -> Session:
        """One session (its turn failed first if the turn's runner is gone)."""
        async with self._unit_of_work() as uow:
            found = visible(await uow.sessions.get(tenant_id, session_id), session_id)
            expired = await lease_expired(uow, tenant_id, found)
        if expired:
            reaped = await self._reap(tenant_id, session_id)
            if reaped is None:
                raise session_not_found(session_id)
            return reaped
        return found

    async def _reap(self, tenant_id: str, session_id: str) -> Session | None:
        """Fails the session's turn if its lease ran out, so no read shows a dead turn running.

        Followers on PostgreSQL are woken by the NOTIFY this writes; elsewhere they look for
        themselves when the lease runs out.
        """
        async with self._unit_of_work(write=True) as uow:
            current = await uow.sessions.get(tenant_id, session_id, for_update=True)
            if current is None:
                return None
            reaped, written = await fail_abandoned(uow, tenant_id, current)
            await uow.commit()
        if written is not None and written.next is not None:
            self._start_queued(written.next)
        return reaped

    async def list_sessions(
        self, tenant_id: str, filter_text: str, requested_size: int, page_token: str
    ) -> Page[Session]:
        """One page of sessions matching the filter, oldest first."""
        size = page_size(requested_size)
        conditions = parse_filter(filter_text, FILTER_FIELDS, FILTER_PREFIXES)
        for condition in conditions:
            if condition.field == "status":
                _status_value(condition.value)
        scope = page_scope("sessions", tenant_id, filter_text)
        after = decode_page_token(page_token, scope, shape=(str, str)) if page_token else []
        position = _session_position(after)
        viewer = caller()
        async with self._unit_of_work() as uow:
            items = await uow.sessions.page(
                tenant_id, conditions, position, size + 1, viewer=viewer
            )
            total = await uow.sessions.count(tenant_id, conditions, viewer=viewer)

            running = {s.session_id: s.active_turn_id for s in items if s.active_turn_id}
            turns = await uow.turns.of_sessions(tenant_id, running)
        now = utcnow()
        for index, item in enumerate(items):
            turn = turns.get(item.session_id)
            if item.active_turn_id and (
                turn is None or turn.status is not TurnStatus.RUNNING or turn.lease_expires <= now
            ):
                items[index] = await self._reap(tenant_id, item.session_id) or item
        return page_of(
            items, size, scope, lambda item: [item.create_time.isoformat(), item.session_id], total
        )

    async def delete(self, tenant_id: str, session_id: str) -> None:
        """Removes a session and its transcript."""
        await self._delete(tenant_id, session_id)

    async def _delete(
        self, tenant_id: str, session_id: str, due_at: datetime | None = None
    ) -> bool:
        """Removes a session, its transcript and workspace; with due_at, only when it ended
        and its retention ran out by then (checked under the row lock; False otherwise)."""
        async with self._unit_of_work(write=True) as uow:
            current = await uow.sessions.get(tenant_id, session_id, for_update=True)
            if current is None and due_at is not None:
                return False  # another replica's sweeper got there first
            current = visible(current, session_id)
            if due_at is not None and not current.deletable_at(due_at):
                return False
            # A turn whose replica died holds nothing up: it is failed first.
            current, _ = await fail_abandoned(uow, tenant_id, current)
            current.refuse_during_turn("delete")
            await uow.sessions.delete(tenant_id, session_id)
            await uow.commit()
        if self._workspaces is not None:
            # After the commit: a failed delete must not cost the session its files.
            await asyncio.to_thread(self._workspaces.remove, tenant_id, session_id)
        return True

    async def expire_idle(self, limit: int = 100) -> int:
        """Completes (IDLE_TIMEOUT) open sessions idle past their ttl; returns how many.

        Each is claimed under its row lock and checked again there (still open, no turn
        running or waiting, still past its deadline), so of all replicas sweeping at once,
        exactly one completes it.
        """
        async with self._unit_of_work() as uow:
            candidates = await uow.sessions.idle(utcnow(), limit)
        expired = 0
        for tenant_id, session_id in candidates:
            async with self._unit_of_work(write=True) as uow:
                current = await uow.sessions.get(tenant_id, session_id, for_update=True)
                now = utcnow()
                if current is None or not current.idle_at(now):
                    continue
                updated = current.moved(Transition.EXPIRE, now)
                await uow.sessions.save(tenant_id, updated)
                await uow.commit()
            expired += 1
            _log.info(
                "completed idle session",
                extra={"tenant_id": tenant_id, "session_id": session_id},
            )
            self._note(updated)
        return expired

    async def delete_expired(self, limit: int = 100) -> int:
        """Deletes ended sessions whose retention ran out (as DeleteSession does, workspace
        too); returns how many this call deleted."""
        now = utcnow()
        async with self._unit_of_work() as uow:
            candidates = await uow.sessions.deletable(now, limit)
        deleted = 0
        for tenant_id, session_id in candidates:
            if await self._delete(tenant_id, session_id, due_at=utcnow()):
                deleted += 1
        return deleted

    async def next_lifetime_deadline(self) -> datetime | None:
        """When the next session idles out or is due to be deleted, if any is."""
        async with self._unit_of_work() as uow:
            return await uow.sessions.next_lifetime_deadline()

    async def transition(
        self,
        tenant_id: str,
        session_id: str,
        transition: Transition,
        *,
        error_message: str = "",
        upgrade_config: bool = False,
        time_remaining: float | None = None,
    ) -> Session:
        """Moves a session through its lifecycle; illegal moves are FAILED_PRECONDITION."""
        if len(error_message) > MAX_ERROR_MESSAGE:
            raise InvalidArgument(
                "error_message is too long.",
                violations=[
                    FieldViolation("error_message", f"longer than {MAX_ERROR_MESSAGE} characters")
                ],
            )
        new_revision: int | None = None
        if transition is Transition.RESUME and upgrade_config:
            # Prepared before the write, so the session never points at a revision that
            # cannot be prepared.
            current = await self.get(tenant_id, session_id)
            next_status(session_id, current.status, transition)
            prepared = await _reprepared(self._preparer, tenant_id, current, time_remaining)
            new_revision = prepared.revision
        async with self._unit_of_work(write=True) as uow:
            current = await visible_session(uow, tenant_id, session_id, for_update=True)

            next_status(session_id, current.status, transition)
            if transition in ENDING_TRANSITIONS:
                # A turn whose replica died holds nothing up: it is failed first.
                current, _ = await fail_abandoned(uow, tenant_id, current)
            updated = current.moved(
                transition,
                utcnow(),
                error_message=error_message,
                config_revision=new_revision or 0,
            )
            await uow.sessions.save(tenant_id, updated)
            await uow.commit()
        self._note(updated)
        return updated

    async def append_message(
        self,
        tenant_id: str,
        session_id: str,
        role: Role | None,
        content: str,
        tool_calls: Sequence[ToolCall] = (),
        tool_call_id: str = "",
    ) -> Message:
        """Adds a message to the transcript without running a turn."""
        checked_role = check_message(role, content, tool_calls, tool_call_id)
        async with self._unit_of_work(write=True) as uow:
            current = await visible_session(uow, tenant_id, session_id, for_update=True)
            current, _ = await fail_abandoned(uow, tenant_id, current)
            now = utcnow()
            message = Message(
                message_id=uuid.uuid4().hex,
                role=checked_role,
                content=content,
                sequence=current.message_count + 1,
                create_time=now,
                tool_calls=tuple(tool_calls),
                tool_call_id=tool_call_id,
            )
            updated = current.with_message(message, now)
            await uow.messages.append(tenant_id, session_id, message)
            await uow.sessions.save(tenant_id, updated)
            await uow.commit()
        return message

    async def list_messages(
        self, tenant_id: str, session_id: str, requested_size: int, page_token: str
    ) -> Page[Message]:
        """One page of the transcript, oldest first."""
        size = page_size(requested_size)
        scope = page_scope("messages", tenant_id, session_id)
        after = decode_page_token(page_token, scope, shape=(int,)) if page_token else []
        async with self._unit_of_work() as uow:
            current = await visible_session(uow, tenant_id, session_id)
            items = await uow.messages.page(
                tenant_id, session_id, int(after[0]) if after else 0, size + 1
            )
        return page_of(items, size, scope, lambda item: [item.sequence], current.message_count)


def _check_config_reference(config_id: str, revision: int, revision_field: str) -> None:
    if not config_id:
        raise InvalidArgument(
            "config_id is required.",
            reason="FIELD_REQUIRED",
            violations=[FieldViolation("config_id", "is required")],
        )
    if revision < 0:
        raise InvalidArgument(
            f"{revision_field} must not be negative.",
            violations=[FieldViolation(revision_field, "must be >= 0")],
        )


def _create_fingerprint(
    config_id: str,
    revision: int,
    session_id: str,
    tags: Mapping[str, str],
    start: bool,
    display_name: str,
    ttl: float | None = None,
    delete_after: float | None = None,
    overrides: str = "",
) -> str:
    """What makes two CreateSession requests the same request (all but its request_id)."""
    request: dict[str, object] = {
        "config_id": config_id,
        "config_revision": revision,
        "session_id": session_id,
        "tags": dict(sorted(tags.items())),
        "start": start,
    }
    if display_name:
        # Only when given, so fingerprints recorded before names existed still match.
        request["display_name"] = display_name
    # Likewise only when given, for fingerprints recorded before sessions had lifetimes.
    if ttl is not None:
        request["ttl"] = ttl
    if delete_after is not None:
        request["delete_after"] = delete_after
    if overrides:
        request["overrides"] = overrides
    return fingerprint(json.dumps(request, sort_keys=True).encode())


async def _reprepared(
    preparer: PreparesBundles, tenant_id: str, session: Session, time_remaining: float | None
) -> PreparedBundle:
    """The latest revision of the session's config, with its overrides composed again.

    Overrides that no longer apply to it refuse the upgrade: the request carries none, so
    the session's state is what is wrong (FAILED_PRECONDITION, each problem named).
    """
    try:
        return await preparer.prepare(
            tenant_id, session.config_id, 0, time_remaining, overrides=session.overrides
        )
    except InvalidOverrides as exc:
        raise FailedPrecondition(
            "The session's overrides do not apply to the latest revision of its config: "
            f"{exc.message}",
            reason="OVERRIDES_DO_NOT_APPLY",
            metadata={"session_id": session.session_id},
            violations=[
                PreconditionViolation("INVALID_OVERRIDES", v.field, v.description)
                for v in exc.violations
            ],
        ) from None


def _session_position(after: Sequence[Any]) -> tuple[str, str] | None:
    """The (create_time, session_id) a sessions page resumes after; a bad one is refused."""
    if not after:
        return None
    try:
        datetime.fromisoformat(after[0])
    except ValueError:
        # Only a token signed with a guessed key gets here; it is still just a bad token.
        raise invalid_page_token() from None
    return str(after[0]), str(after[1])


def _status_value(value: str) -> Status:
    try:
        return Status(value.upper().removeprefix("SESSION_STATUS_"))
    except ValueError:
        raise InvalidArgument(
            f"Unknown session status {value!r}.",
            reason="INVALID_FILTER",
            violations=[
                FieldViolation("filter", f"status must be one of {[s.value for s in Status]}")
            ],
        ) from None

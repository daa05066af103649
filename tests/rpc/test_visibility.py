"""Visibility through real stubs on both databases: who sees which configs and sessions.

Four callers of one tenant (tests/support/secured.TEAM_KEYS): the owner and a teammate in
team "a", another caller in team "b", and an admin. The owner makes one config and one
session of each visibility; every read and write RPC is then tried by every caller. A caller
who may not see the object gets NOT_FOUND shaped exactly like the answer for an unknown id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_pb2, session_service_pb2
from tests.support.rpc import detail, error_info
from tests.support.secured import TEAM_KEYS, Secured, auth, secured_stack
from tests.support.turns import bundle, collect

CALLERS = ("owner", "mate", "other", "admin")
VISIBILITIES: dict[str, config_pb2.Visibility.ValueType] = {
    "private": config_pb2.VISIBILITY_PRIVATE,
    "team": config_pb2.VISIBILITY_TEAM,
    "org": config_pb2.VISIBILITY_ORG,
}
# Who sees what the owner made, by visibility.
SEES = {
    "private": {"owner", "admin"},
    "team": {"owner", "mate", "admin"},
    "org": set(CALLERS),
}
DOCUMENT = bundle({"reply": "hello"})

Call = Callable[[str, str], Awaitable[Any]]


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Secured]:
    async with secured_stack(database_url, tmp_path, keys=TEAM_KEYS) as running:
        yield running


async def outcome(call: Awaitable[Any]) -> grpc.aio.AioRpcError | None:
    """The error a call fails with, or None when it succeeds."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    return None


def shape(error: grpc.aio.AioRpcError, name: str) -> tuple[Any, ...]:
    """What a caller can read from an error, with the id it names blanked out."""
    info = error_info(error)
    return (
        error.code(),
        (error.details() or "").replace(name, "ID"),
        info.reason,
        sorted((k, v.replace(name, "ID")) for k, v in info.metadata.items()),
    )


async def check_matrix(calls: dict[str, Call], objects: dict[str, str], unknown: str) -> None:
    """Runs every call for every caller on every object (visibility -> id), in that order:
    a caller who sees the object must not get NOT_FOUND, anyone else gets exactly the
    NOT_FOUND an unknown id gets."""
    for what, call in calls.items():
        for visibility, name in objects.items():
            for who in CALLERS:
                error = await outcome(call(who, name))
                if who in SEES[visibility]:
                    assert error is None or error.code() is not grpc.StatusCode.NOT_FOUND, (
                        what,
                        who,
                        visibility,
                        error and error.details(),
                    )
                    continue
                assert error is not None, (what, who, visibility)
                missing = await outcome(call(who, unknown))
                assert missing is not None
                assert missing.code() is grpc.StatusCode.NOT_FOUND
                assert shape(error, name) == shape(missing, unknown), (what, who, visibility)


# --- configs ---------------------------------------------------------------------------


async def owned_configs(stack: Secured, prefix: str = "c") -> dict[str, str]:
    """One config of each visibility, made by the owner: visibility -> config id."""
    made = {}
    for visibility, number in VISIBILITIES.items():
        config_id = f"{prefix}-{visibility}"
        created = await stack.configs.CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id=config_id,
                config=config_pb2.Config(name=config_id, yaml_content=DOCUMENT, visibility=number),
            ),
            metadata=auth("owner"),
        )
        assert (created.owner, created.visibility, created.team) == ("owner", number, "a")
        made[visibility] = config_id
    return made


async def test_config_reads_show_each_caller_only_what_it_may_see(stack: Secured) -> None:
    configs = await owned_configs(stack)
    stub = stack.configs
    calls: dict[str, Call] = {
        "GetConfig": lambda who, name: stub.GetConfig(
            config_service_pb2.GetConfigRequest(config_id=name), metadata=auth(who)
        ),
        "GetConfig revision": lambda who, name: stub.GetConfig(
            config_service_pb2.GetConfigRequest(config_id=name, revision=1), metadata=auth(who)
        ),
        "ListConfigRevisions": lambda who, name: stub.ListConfigRevisions(
            config_service_pb2.ListConfigRevisionsRequest(config_id=name), metadata=auth(who)
        ),
    }
    await check_matrix(calls, configs, "c-unknown")


async def test_config_writes_reach_only_what_the_caller_may_see(stack: Secured) -> None:
    configs = await owned_configs(stack)
    stub = stack.configs

    def edit(method: str, field: str, value: str) -> Call:
        # Each caller adds and removes a module (or include) of its own: every write of
        # every caller who sees the config makes a revision.
        requests = {
            "AddTool": config_service_pb2.AddToolRequest,
            "RemoveTool": config_service_pb2.RemoveToolRequest,
            "AddProvider": config_service_pb2.AddProviderRequest,
            "RemoveProvider": config_service_pb2.RemoveProviderRequest,
            "AddInclude": config_service_pb2.AddIncludeRequest,
            "RemoveInclude": config_service_pb2.RemoveIncludeRequest,
        }
        return lambda who, name: getattr(stub, method)(
            requests[method](config_id=name, **{field: value.format(who)}), metadata=auth(who)
        )

    calls: dict[str, Call] = {
        "UpdateConfig": lambda who, name: stub.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(config_id=name, description=f"by {who}")
            ),
            metadata=auth(who),
        ),
        "AddTool": edit("AddTool", "module", "tool-{}"),
        "RemoveTool": edit("RemoveTool", "module", "tool-{}"),
        "AddProvider": edit("AddProvider", "module", "provider-{}"),
        "RemoveProvider": edit("RemoveProvider", "module", "provider-{}"),
        "AddInclude": edit("AddInclude", "bundle", "base-{}"),
        "RemoveInclude": edit("RemoveInclude", "bundle", "base-{}"),
        "RollbackConfig": lambda who, name: stub.RollbackConfig(
            config_service_pb2.RollbackConfigRequest(config_id=name, revision=1),
            metadata=auth(who),
        ),
    }
    await check_matrix(calls, configs, "c-unknown")
    # Refused writes wrote nothing: each config has a revision per write of each caller
    # who sees it, on top of the first.
    for visibility, name in configs.items():
        current = await stub.GetConfig(
            config_service_pb2.GetConfigRequest(config_id=name), metadata=auth("admin")
        )
        assert current.revision == 1 + len(calls) * len(SEES[visibility]), visibility
    # Deleting is an admin's (the role decides before visibility does); an admin sees all.
    denied = await outcome(
        stub.DeleteConfig(
            config_service_pb2.DeleteConfigRequest(config_id=configs["org"]), metadata=auth("mate")
        )
    )
    assert denied is not None
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    await stub.DeleteConfig(
        config_service_pb2.DeleteConfigRequest(config_id=configs["private"]),
        metadata=auth("admin"),
    )


async def test_config_listings_hold_and_count_only_what_the_caller_may_see(
    stack: Secured,
) -> None:
    configs = await owned_configs(stack)
    for who in CALLERS:
        expected = sorted(name for v, name in configs.items() if who in SEES[v])
        page = await stack.configs.ListConfigs(
            config_service_pb2.ListConfigsRequest(), metadata=auth(who)
        )
        assert sorted(c.config_id for c in page.configs) == expected, who
        assert page.total_size == len(expected), who
        # Page by page, too: no page token leads to something hidden.
        found: list[str] = []
        token = ""
        while True:
            page = await stack.configs.ListConfigs(
                config_service_pb2.ListConfigsRequest(page_size=1, page_token=token),
                metadata=auth(who),
            )
            found.extend(c.config_id for c in page.configs)
            token = page.next_page_token
            if not token:
                break
        assert sorted(found) == expected, who


async def test_a_watch_names_only_configs_the_watcher_may_see(stack: Secured) -> None:
    watches = {
        who: stack.configs.WatchConfigs(
            config_service_pb2.WatchConfigsRequest(after_sequence=0), metadata=auth(who)
        )
        for who in CALLERS
    }
    for call in watches.values():
        await call.initial_metadata()
    configs = await owned_configs(stack)
    last = await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="c-last", config=config_pb2.Config(name="c-last", yaml_content=DOCUMENT)
        ),
        metadata=auth("other"),
    )
    for who, call in watches.items():
        seen: list[str] = []
        while not seen or seen[-1] != last.name:
            change = await asyncio.wait_for(call.read(), 10)
            assert isinstance(change, config_pb2.ConfigChange)
            seen.append(change.name)
        call.cancel()
        expected = [name for v, name in configs.items() if who in SEES[v]]
        assert seen == [*expected, last.name], who


async def test_only_the_owner_or_an_admin_changes_a_configs_visibility(stack: Secured) -> None:
    configs = await owned_configs(stack)
    name = configs["team"]

    def share(who: str, visibility: config_pb2.Visibility.ValueType) -> Any:
        return stack.configs.UpdateConfig(
            config_service_pb2.UpdateConfigRequest(
                config=config_pb2.Config(config_id=name, visibility=visibility),
                update_mask=field_mask_pb2.FieldMask(paths=["visibility"]),
            ),
            metadata=auth(who),
        )

    denied = await outcome(share("mate", config_pb2.VISIBILITY_ORG))
    assert denied is not None
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(denied).metadata["field"] == "config.visibility"
    private = await share("owner", config_pb2.VISIBILITY_PRIVATE)
    assert (private.visibility, private.owner) == (config_pb2.VISIBILITY_PRIVATE, "owner")
    hidden = await outcome(
        stack.configs.GetConfig(
            config_service_pb2.GetConfigRequest(config_id=name), metadata=auth("mate")
        )
    )
    assert hidden is not None
    assert hidden.code() is grpc.StatusCode.NOT_FOUND
    await share("admin", config_pb2.VISIBILITY_ORG)
    seen = await stack.configs.GetConfig(
        config_service_pb2.GetConfigRequest(config_id=name), metadata=auth("other")
    )
    assert (seen.visibility, seen.owner, seen.team) == (config_pb2.VISIBILITY_ORG, "owner", "a")
    unknown = await outcome(share("owner", config_pb2.Visibility.ValueType(9)))
    assert unknown is not None
    assert unknown.code() is grpc.StatusCode.INVALID_ARGUMENT
    violation = detail(unknown, error_details_pb2.BadRequest).field_violations[0]
    assert violation.field == "config.visibility"


# --- sessions --------------------------------------------------------------------------


async def owned_sessions(stack: Secured) -> dict[str, str]:
    """One started session of each visibility, made by the owner on an ORG config."""
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="chat", config=config_pb2.Config(name="chat", yaml_content=DOCUMENT)
        ),
        metadata=auth("owner"),
    )
    made = {}
    for visibility, number in VISIBILITIES.items():
        session = await stack.sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(
                config_id="chat", session_id=f"s-{visibility}", start=True, visibility=number
            ),
            metadata=auth("owner"),
        )
        assert (session.owner, session.visibility, session.team) == ("owner", number, "a")
        made[visibility] = session.session_id
    return made


async def test_sessions_are_private_unless_asked_and_listings_show_only_visible_ones(
    stack: Secured,
) -> None:
    sessions = await owned_sessions(stack)
    default = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id="chat"), metadata=auth("mate")
    )
    assert (default.owner, default.visibility, default.team) == (
        "mate",
        config_pb2.VISIBILITY_PRIVATE,
        "a",
    )
    for who in CALLERS:
        expected = sorted(
            [name for v, name in sessions.items() if who in SEES[v]]
            + ([default.session_id] if who in ("mate", "admin") else [])
        )
        page = await stack.sessions.ListSessions(
            session_service_pb2.ListSessionsRequest(), metadata=auth(who)
        )
        assert sorted(s.session_id for s in page.sessions) == expected, who
        assert page.total_size == len(expected), who


async def test_session_reads_show_each_caller_only_what_it_may_see(stack: Secured) -> None:
    sessions = await owned_sessions(stack)
    stub = stack.sessions
    calls: dict[str, Call] = {
        "GetSession": lambda who, name: stub.GetSession(
            session_service_pb2.GetSessionRequest(session_id=name), metadata=auth(who)
        ),
        "ListMessages": lambda who, name: stub.ListMessages(
            session_service_pb2.ListMessagesRequest(session_id=name), metadata=auth(who)
        ),
        "StreamEvents": lambda who, name: collect(
            stub.StreamEvents(
                session_service_pb2.StreamEventsRequest(session_id=name), metadata=auth(who)
            )
        ),
    }
    await check_matrix(calls, sessions, "s-unknown")


async def test_session_writes_reach_only_what_the_caller_may_see(stack: Secured) -> None:
    sessions = await owned_sessions(stack)
    stub = stack.sessions

    def lifecycle(method: str) -> Call:
        request = getattr(session_service_pb2, f"{method}Request")
        return lambda who, name: getattr(stub, method)(request(session_id=name), metadata=auth(who))

    calls: dict[str, Call] = {
        "AppendMessage": lambda who, name: stub.AppendMessage(
            session_service_pb2.AppendMessageRequest(
                session_id=name,
                message=session_pb2.Message(role=session_pb2.ROLE_USER, content=f"by {who}"),
            ),
            metadata=auth(who),
        ),
        "SendMessage": lambda who, name: collect(
            stub.SendMessage(
                session_service_pb2.SendMessageRequest(
                    session_id=name, content=f"hi from {who}", request_id=f"{who}-{name}"
                ),
                metadata=auth(who),
            )
        ),
        # A retry of someone else's request_id finds nothing to re-attach to either.
        "SendMessage retry": lambda who, name: collect(
            stub.SendMessage(
                session_service_pb2.SendMessageRequest(
                    session_id=name, content="hi from owner", request_id=f"owner-{name}"
                ),
                metadata=auth(who),
            )
        ),
        "CancelTurn": lambda who, name: stub.CancelTurn(
            session_service_pb2.CancelTurnRequest(session_id=name), metadata=auth(who)
        ),
        "DecideApproval": lambda who, name: stub.DecideApproval(
            session_service_pb2.DecideApprovalRequest(
                session_id=name,
                tool_call_id="call-1",
                decision=session_service_pb2.DecideApprovalRequest.DECISION_APPROVE,
            ),
            metadata=auth(who),
        ),
        "StartSession": lifecycle("StartSession"),
        "CompleteSession": lifecycle("CompleteSession"),
        "ResumeSession": lifecycle("ResumeSession"),
        "TerminateSession": lifecycle("TerminateSession"),
        "ResumeSession again": lifecycle("ResumeSession"),
    }
    await check_matrix(calls, sessions, "s-unknown")
    # What the hidden callers tried left no trace: the transcripts hold the visible callers'
    # appended messages and turns only.
    for visibility, name in sessions.items():
        page = await stub.ListMessages(
            session_service_pb2.ListMessagesRequest(session_id=name, page_size=100),
            metadata=auth("admin"),
        )
        appended = sorted(m.content for m in page.messages if m.content.startswith("by "))
        assert appended == sorted(f"by {who}" for who in SEES[visibility]), visibility
    calls = {"FailSession": lifecycle("FailSession")}
    await check_matrix(calls, sessions, "s-unknown")
    denied = await outcome(
        stub.DeleteSession(
            session_service_pb2.DeleteSessionRequest(session_id=sessions["org"]),
            metadata=auth("owner"),
        )
    )
    assert denied is not None
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    await stub.DeleteSession(
        session_service_pb2.DeleteSessionRequest(session_id=sessions["private"]),
        metadata=auth("admin"),
    )


# --- the prepared-bundle cache ---------------------------------------------------------


async def test_a_cached_preparation_is_not_handed_to_a_caller_who_may_not_see_its_configs(
    stack: Secured,
) -> None:
    async def create(
        who: str, name: str, document: str, visibility: config_pb2.Visibility.ValueType
    ) -> None:
        await stack.configs.CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id=name,
                config=config_pb2.Config(name=name, yaml_content=document, visibility=visibility),
            ),
            metadata=auth(who),
        )

    def session_on(who: str, name: str) -> Any:
        return stack.sessions.CreateSession(
            session_service_pb2.CreateSessionRequest(config_id=name, config_revision=1),
            metadata=auth(who),
        )

    wrapper = "bundle:\n  name: {}\nincludes: [secret-base]\n"
    await create("owner", "secret", DOCUMENT, config_pb2.VISIBILITY_PRIVATE)
    await create("owner", "secret-base", DOCUMENT, config_pb2.VISIBILITY_PRIVATE)
    await create("owner", "cached-inc", wrapper.format("cached-inc"), config_pb2.VISIBILITY_ORG)
    await create("owner", "fresh-inc", wrapper.format("fresh-inc"), config_pb2.VISIBILITY_ORG)
    # The owner's sessions prepare these revisions, and the cache keeps them.
    await session_on("owner", "secret")
    await session_on("owner", "cached-inc")
    for who in ("mate", "other"):
        hidden = await outcome(session_on(who, "secret"))
        unknown = await outcome(session_on(who, "missing"))
        assert hidden is not None
        assert unknown is not None
        assert shape(hidden, "secret") == shape(unknown, "missing"), who
        prepared = await outcome(
            stack.sessions.PrepareConfig(
                session_service_pb2.PrepareConfigRequest(config_id="secret", revision=1),
                metadata=auth(who),
            )
        )
        assert prepared is not None
        assert prepared.code() is grpc.StatusCode.NOT_FOUND
        # An included config the caller may not see fails as a fresh preparation does.
        cached = await outcome(session_on(who, "cached-inc"))
        fresh = await outcome(session_on(who, "fresh-inc"))
        assert cached is not None
        assert fresh is not None
        assert cached.code() is grpc.StatusCode.FAILED_PRECONDITION
        violations = detail(cached, error_details_pb2.PreconditionFailure).violations
        assert [v.type for v in violations] == ["INCLUDE_NOT_FOUND"]
        assert shape(cached, "cached-inc") == shape(fresh, "fresh-inc"), who
    # The owner still gets the cached preparation.
    session = await session_on("owner", "cached-inc")

    assert session.config_revision == 1


async def test_a_turn_follows_its_sessions_visibility_not_its_configs(stack: Secured) -> None:
    await stack.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id="solo",
            config=config_pb2.Config(
                name="solo", yaml_content=DOCUMENT, visibility=config_pb2.VISIBILITY_PRIVATE
            ),
        ),
        metadata=auth("owner"),
    )
    session = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(
            config_id="solo", start=True, visibility=config_pb2.VISIBILITY_TEAM
        ),
        metadata=auth("owner"),
    )
    # The teammate may not read the config, but runs turns in the session shared with it.
    events = await collect(
        stack.sessions.SendMessage(
            session_service_pb2.SendMessageRequest(session_id=session.session_id, content="hi"),
            metadata=auth("mate"),
        )
    )
    assert events[-1].WhichOneof("event") == "turn_completed"
    hidden = await outcome(
        stack.configs.GetConfig(
            config_service_pb2.GetConfigRequest(config_id="solo"), metadata=auth("mate")
        )
    )
    assert hidden is not None
    assert hidden.code() is grpc.StatusCode.NOT_FOUND


async def test_forks_and_rewinds_need_the_session_visible_and_a_fork_is_the_forkers(
    stack: Secured,
) -> None:
    sessions = await owned_sessions(stack)
    stub = stack.sessions
    first: dict[str, str] = {}
    for name in sessions.values():
        message = await stub.AppendMessage(
            session_service_pb2.AppendMessageRequest(
                session_id=name,
                message=session_pb2.Message(role=session_pb2.ROLE_USER, content="first"),
            ),
            metadata=auth("owner"),
        )
        first[name] = message.message_id

    calls: dict[str, Call] = {
        "ForkSession": lambda who, name: stub.ForkSession(
            session_service_pb2.ForkSessionRequest(session_id=name), metadata=auth(who)
        ),
        "RewindSession": lambda who, name: stub.RewindSession(
            session_service_pb2.RewindSessionRequest(
                session_id=name, to_message_id=first.get(name, "unknown-message")
            ),
            metadata=auth(who),
        ),
    }
    await check_matrix(calls, sessions, "s-unknown")
    fork = await stub.ForkSession(
        session_service_pb2.ForkSessionRequest(session_id=sessions["team"]), metadata=auth("mate")
    )
    assert (fork.owner, fork.team, fork.visibility) == ("mate", "a", config_pb2.VISIBILITY_TEAM)
    hidden = await outcome(
        stub.GetSession(
            session_service_pb2.GetSessionRequest(session_id=fork.session_id),
            metadata=auth("other"),
        )
    )
    assert hidden is not None
    assert hidden.code() is grpc.StatusCode.NOT_FOUND

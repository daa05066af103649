"""The visibility rule: in Python, as SQL on both databases, and as the use cases apply it.

The use cases run over the in-memory units of work (no I/O); the SQL condition runs on a
SQLite file and a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import sqlalchemy as sa

from config_service.configs.edits import AddModule
from config_service.configs.model import ConfigChange, ConfigFields, Watcher
from config_service.configs.packages import IncomingFile
from config_service.configs.service import ConfigService, Watch
from config_service.settings import ConfigServiceSettings
from session_service.sessions.model import Role as MessageRole
from session_service.sessions.service import SessionService
from session_service.turns.service import TurnOptions, TurnService
from session_service.turns.signals import TurnSignals
from shared.auth.identity import Identity, Role, act_as
from shared.auth.keys import KeyFileError, parse_keys
from shared.broadcast import Broadcast
from shared.errors import NotFound, PermissionDenied, TandemError, Unauthenticated
from shared.visibility import Viewer, Visibility, caller
from tests.support.jwks import AUDIENCE, ISSUER, new_rsa, public_jwk, sign, write_jwks
from tests.unit.config_fakes import FakeConfigDatabase
from tests.unit.session_fakes import FakeSessionDatabase, RecordingRunner, StubPreparer

TENANT = "t1"
OWNER = Identity(TENANT, Role.WRITER, "owner", team="a")
MATE = Identity(TENANT, Role.WRITER, "mate", team="a")
OTHER = Identity(TENANT, Role.WRITER, "other", team="b")
LONER = Identity(TENANT, Role.WRITER, "loner")
ADMIN = Identity(TENANT, Role.ADMIN, "admin")
SERVICE = Identity("system", None, "session-service", service=True)

# Who sees an object the owner made, by visibility (the issue's matrix).
SEES = {
    Visibility.PRIVATE: {"owner", "admin"},
    Visibility.TEAM: {"owner", "mate", "admin"},
    Visibility.ORG: {"owner", "mate", "other", "loner", "admin"},
}
CALLERS = {"owner": OWNER, "mate": MATE, "other": OTHER, "loner": LONER, "admin": ADMIN}

DOC = """\
bundle:
  name: dev
session:
  orchestrator: loop-basic
  context:
    module: context-simple
providers:
  - module: provider-echo
"""


@contextlib.contextmanager
def acting(identity: Identity) -> Iterator[None]:
    """Runs the block as identity, as the authentication interceptor would."""
    token = act_as(identity)
    try:
        yield
    finally:
        token.var.reset(token)


def described(error: TandemError, name: str) -> tuple[str, str, str]:
    """An error as a caller reads it, with the id it names replaced: its shape."""
    assert isinstance(error, NotFound)
    return (
        error.message.replace(repr(name), "ID"),
        error.reason,
        error.resource_name.replace(name, "ID"),
    )


# --- the rule --------------------------------------------------------------------------


@pytest.mark.parametrize("visibility", list(Visibility))
@pytest.mark.parametrize("who", list(CALLERS))
def test_the_rule_lets_owner_team_org_and_admins_see(who: str, visibility: Visibility) -> None:
    viewer = Viewer.of(CALLERS[who])
    assert viewer.may_see("owner", visibility, "a") is (who in SEES[visibility])


def test_an_empty_team_shares_with_nobody_and_an_ownerless_object_is_nobodys() -> None:
    # Neither "" == "" for teams nor for owners may count as a match.
    assert not Viewer("loner").may_see("someone", Visibility.TEAM, "")
    assert not Viewer("loner").may_see("", Visibility.PRIVATE, "")
    assert not Viewer("").may_see("", Visibility.PRIVATE, "")
    # What existed before visibility (owner "", ORG) stays the tenant's.
    assert Viewer("loner").may_see("", Visibility.ORG, "")


def test_admins_and_service_identities_see_all_and_only_owner_or_admin_may_share() -> None:
    assert Viewer.of(ADMIN).sees_all
    assert Viewer.of(SERVICE).sees_all
    assert not Viewer.of(OWNER).sees_all
    assert Viewer.of(OWNER).may_share("owner")
    assert Viewer.of(ADMIN).may_share("owner")
    assert not Viewer.of(MATE).may_share("owner")
    assert not Viewer.of(MATE).may_share("")


def test_outside_any_rpc_the_caller_is_the_development_admin() -> None:
    assert caller().sees_all


@pytest.fixture
def visibility_table(database_url: str) -> Iterator[tuple[sa.Engine, sa.Table]]:
    engine = sa.create_engine(database_url.replace("+asyncpg", "+psycopg"))
    metadata = sa.MetaData()
    table = sa.Table(
        "visible_things",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
    )
    metadata.create_all(engine)
    try:
        yield engine, table
    finally:
        engine.dispose()


def test_the_sql_condition_selects_exactly_what_the_rule_allows(
    visibility_table: tuple[sa.Engine, sa.Table],
) -> None:
    engine, table = visibility_table
    rows = [
        (owner, visibility, team)
        for owner in ("owner", "mate", "other", "")
        for visibility in Visibility
        for team in ("a", "b", "")
    ]
    with engine.begin() as connection:
        connection.execute(
            table.insert(),
            [
                {"id": index, "owner": o, "visibility": v.value, "team": t}
                for index, (o, v, t) in enumerate(rows)
            ],
        )
    for identity in (*CALLERS.values(), Identity(TENANT, Role.READER, "", team="")):
        viewer = Viewer.of(identity)
        condition = viewer.condition(table.c.owner, table.c.visibility, table.c.team)
        with engine.connect() as connection:
            found = set(connection.scalars(sa.select(table.c.id).where(condition)))
        expected = {index for index, row in enumerate(rows) if viewer.may_see(*row)}
        assert found == expected, identity.subject


# --- where a caller's team comes from --------------------------------------------------


def test_a_key_names_its_team_and_the_identity_carries_it() -> None:
    text = json.dumps(
        {
            "keys": [
                {"name": "k1", "tenant": "t", "role": "writer", "team": " a ", "sha256": "0" * 64},
                {"name": "k2", "tenant": "t", "role": "admin", "sha256": "1" * 64},
            ]
        }
    )
    keys = parse_keys(text, "keys.yaml")
    assert keys.entries["0" * 64].identity("Bearer x").team == "a"
    assert keys.entries["1" * 64].identity("Bearer y").team == ""


@pytest.mark.parametrize("team", [7, ["a"], "x" * 129])
def test_a_team_that_is_not_a_short_string_is_refused_with_its_place(team: object) -> None:
    text = json.dumps(
        {"keys": [{"name": "k", "tenant": "t", "role": "writer", "team": team, "sha256": "0" * 64}]}
    )
    with pytest.raises(KeyFileError, match=r"keys\[0\]\.team"):
        parse_keys(text, "keys.yaml")


def test_a_token_takes_its_team_from_the_configured_claim(tmp_path: Path) -> None:
    key = new_rsa()
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, public_jwk(key, "k1"))
    # As the services build it from TANDEM_JWT_TEAM_CLAIM.
    verifier = ConfigServiceSettings(
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_jwks_file=str(jwks),
        jwt_team_claim="groups_team",
    ).token_verifier()
    assert verifier is not None
    assert verifier.verify(sign(key, "k1", groups_team="platform")).team == "platform"

    # Without the claim the caller is in no team; the default claim name is not consulted.
    assert verifier.verify(sign(key, "k1", team="ignored")).team == ""
    with pytest.raises(Unauthenticated, match="groups_team"):
        verifier.verify(sign(key, "k1", groups_team=["a", "b"]))


# --- ConfigService's use cases ---------------------------------------------------------


@pytest.fixture
def configs() -> ConfigService:
    return ConfigService(FakeConfigDatabase().unit_of_work, Broadcast())


async def make_config(configs: ConfigService, name: str, visibility: Visibility | None) -> str:
    with acting(OWNER):
        created = await configs.create(
            TENANT,
            ConfigFields(name=name, yaml_content=DOC, visibility=visibility),
            config_id=name,
        )
    return created.config_id


async def test_configs_default_to_org_and_record_their_owner_and_team(
    configs: ConfigService,
) -> None:
    await make_config(configs, "plain", None)
    with acting(OTHER):
        found = await configs.get(TENANT, "plain")
    assert (found.owner, found.visibility, found.team) == ("owner", Visibility.ORG, "a")


Attempt = Callable[[str], Awaitable[object]]


def config_attempts(configs: ConfigService, who: str) -> dict[str, Attempt]:
    """Every config use case a caller may try on an id, by name."""
    return {
        "get": lambda config_id: configs.get(TENANT, config_id),
        "get revision": lambda config_id: configs.get(TENANT, config_id, 1),
        "revisions": lambda config_id: configs.list_revisions(TENANT, config_id, 0, ""),
        "update": lambda config_id: configs.update(
            TENANT, config_id, ConfigFields(description=f"by {who}"), None
        ),
        "edit": lambda config_id: configs.edit(
            TENANT, config_id, "", AddModule("tools", f"tool-{who}", None, None)
        ),
        "rollback": lambda config_id: configs.rollback(TENANT, config_id, 1, ""),
    }


@pytest.mark.parametrize("visibility", list(Visibility))
async def test_every_config_read_and_write_answers_an_invisible_config_as_unknown(
    configs: ConfigService, visibility: Visibility
) -> None:
    await make_config(configs, "it", visibility)
    for who, identity in CALLERS.items():
        visible = who in SEES[visibility]
        attempts = config_attempts(configs, who)
        for what, attempt in attempts.items():
            with acting(identity):
                if visible:
                    await attempt("it")
                    continue
                with pytest.raises(NotFound) as hidden:
                    await attempt("it")
                with pytest.raises(NotFound) as unknown:
                    await attempt("nothing")
            assert described(hidden.value, "it") == described(unknown.value, "nothing"), what
        with acting(identity):
            listed = await configs.list_configs(TENANT, "", 50, "")
        assert [c.config_id for c in listed.items] == (["it"] if visible else []), who
        assert listed.total_size == (1 if visible else 0)


@pytest.mark.parametrize("visibility", list(Visibility))
async def test_deleting_a_config_one_may_not_see_is_not_found(
    configs: ConfigService, visibility: Visibility
) -> None:
    await make_config(configs, "it", visibility)
    # The interceptor lets only admins delete; the use case checks visibility whoever asks.
    for who in ("mate", "other"):
        if who in SEES[visibility]:
            continue
        with acting(CALLERS[who]):
            with pytest.raises(NotFound) as hidden:
                await configs.delete(TENANT, "it", "")
            with pytest.raises(NotFound) as unknown:
                await configs.delete(TENANT, "nothing", "")
        assert described(hidden.value, "it") == described(unknown.value, "nothing")
    with acting(ADMIN):
        await configs.delete(TENANT, "it", "")
    with acting(OWNER), pytest.raises(NotFound):
        await configs.get(TENANT, "it")


async def test_only_the_owner_or_an_admin_changes_a_configs_visibility(
    configs: ConfigService,
) -> None:
    await make_config(configs, "shared", Visibility.TEAM)
    with acting(MATE):
        with pytest.raises(PermissionDenied) as denied:
            await configs.update(
                TENANT, "shared", ConfigFields(visibility=Visibility.ORG), ["visibility"]
            )
        assert denied.value.metadata["field"] == "config.visibility"
        # Everything else the teammate may still write, and sending the visibility unchanged
        # is no change to it.
        updated = await configs.update(
            TENANT,
            "shared",
            ConfigFields(description="mate", visibility=Visibility.TEAM),
            ["description", "visibility"],
        )
        assert (updated.description, updated.visibility) == ("mate", Visibility.TEAM)
    with acting(OWNER):
        private = await configs.update(
            TENANT, "shared", ConfigFields(visibility=Visibility.PRIVATE), ["visibility"]
        )
    assert private.visibility is Visibility.PRIVATE
    assert private.revision == updated.revision + 1
    with acting(MATE), pytest.raises(NotFound):
        # Making it private hides its history too.
        await configs.get(TENANT, "shared", 1)
    with acting(ADMIN):
        back = await configs.update(
            TENANT, "shared", ConfigFields(visibility=Visibility.ORG), ["visibility"]
        )
    assert (back.visibility, back.owner) == (Visibility.ORG, "owner")


async def test_a_watch_leaves_out_changes_of_configs_the_watcher_may_not_see(
    configs: ConfigService,
) -> None:
    for visibility in Visibility:
        await make_config(configs, f"v-{visibility.value.lower()}", visibility)
    for who, identity in CALLERS.items():
        expected = [f"v-{v.value.lower()}" for v in Visibility if who in SEES[v]]
        with acting(identity):
            watch = await configs.open_watch(Watcher(TENANT), 0)
        # From the start of the tenant's log, as the caller's own watch would follow it.
        stream = cast(
            AsyncGenerator[ConfigChange, None], configs.follow(Watch(TENANT, 0, watch.viewer))
        )
        seen = [(await asyncio.wait_for(anext(stream), 5)).name for _ in expected]
        await stream.aclose()
        assert seen == expected, who


async def test_an_import_belongs_to_its_importer_and_is_shared_with_the_tenant(
    configs: ConfigService,
) -> None:
    files = [IncomingFile("bundle.md", f"---\n{DOC.replace('dev', 'pkg')}---\nHi.\n".encode())]
    with acting(MATE):
        result = await configs.import_bundle(TENANT, files)
    assert [(c.owner, c.visibility, c.team) for c in result.configs] == [
        ("mate", Visibility.ORG, "a")
    ]
    with acting(OTHER):
        assert (await configs.get(TENANT, result.configs[0].config_id)).name == "pkg"


# --- SessionService's use cases --------------------------------------------------------


@pytest.fixture
def sessions() -> tuple[SessionService, TurnService]:
    database = FakeSessionDatabase()
    turns = TurnService(database.unit_of_work, RecordingRunner(), TurnSignals(), TurnOptions())
    return SessionService(database.unit_of_work, StubPreparer()), turns


def session_attempts(service: SessionService, turns: TurnService, who: str) -> dict[str, Attempt]:
    """Every session use case a caller may try on an id, by name."""
    return {
        "get": lambda session_id: service.get(TENANT, session_id),
        "messages": lambda session_id: service.list_messages(TENANT, session_id, 0, ""),
        "append": lambda session_id: service.append_message(
            TENANT, session_id, MessageRole.USER, f"from {who}"
        ),
        "cancel": lambda session_id: turns.cancel(TENANT, session_id, ""),
    }


@pytest.mark.parametrize("visibility", [None, *Visibility])
async def test_every_session_read_and_write_answers_an_invisible_session_as_unknown(
    sessions: tuple[SessionService, TurnService], visibility: Visibility | None
) -> None:
    service, turns = sessions
    with acting(OWNER):
        created = await service.create(
            TENANT, "cfg", session_id="s", start=True, visibility=visibility
        )
    # Unspecified is PRIVATE for a session.
    effective = visibility or Visibility.PRIVATE
    assert (created.owner, created.visibility, created.team) == ("owner", effective, "a")
    for who, identity in CALLERS.items():
        visible = who in SEES[effective]
        attempts = session_attempts(service, turns, who)
        for what, attempt in attempts.items():
            with acting(identity):
                try:
                    await attempt("s")
                    hidden: TandemError | None = None
                except TandemError as error:
                    hidden = error
                if visible:
                    assert not isinstance(hidden, NotFound), (who, what)
                    continue
                assert hidden is not None, (who, what)
                with pytest.raises(NotFound) as unknown:
                    await attempt("nothing")
            assert described(hidden, "s") == described(unknown.value, "nothing"), (who, what)
        with acting(identity):
            listed = await service.list_sessions(TENANT, "", 50, "")
        assert [s.session_id for s in listed.items] == (["s"] if visible else []), who
        assert listed.total_size == (1 if visible else 0)


async def test_a_child_session_belongs_to_its_parents_owner_whoever_runs_the_turn(
    sessions: tuple[SessionService, TurnService],
) -> None:
    service, _ = sessions
    with acting(OWNER):
        await service.create(TENANT, "cfg", session_id="parent", visibility=Visibility.TEAM)
    with acting(MATE):
        child = await service.create(
            TENANT, "cfg", session_id="child", parent_session_id="parent", agent="helper"
        )
    assert (child.owner, child.visibility, child.team) == ("owner", Visibility.TEAM, "a")
    with acting(OTHER), pytest.raises(NotFound):
        await service.get(TENANT, "child")

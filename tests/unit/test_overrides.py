"""Session overrides on their own: parsing a fragment, refusing bad ones, composing it last."""

from __future__ import annotations

from typing import Any

import pytest

from session_service.prepare.overrides import (
    MAX_OVERRIDES_BYTES,
    InvalidOverrides,
    Overrides,
    apply_overrides,
    fragment_violations,
    parse_overrides,
)
from session_service.sessions.model import Status, Transition
from session_service.sessions.service import SessionService
from session_service.turns.service import TurnOptions, TurnService
from session_service.turns.signals import TurnSignals
from shared.bundle.model import Limits
from shared.errors import FailedPrecondition, FieldViolation, InvalidArgument, PreconditionViolation
from tests.unit.session_fakes import FakeSessionDatabase, RecordingRunner, StubPreparer

LIMITS = Limits()

# A prepared config's composed document, as the preparer has it before the fragment.
COMPOSED: dict[str, Any] = {
    "bundle": {"name": "app"},
    "session": {"orchestrator": "loop-streaming", "context": "context-simple"},
    "providers": [
        {"module": "provider-openai", "config": {"default_model": "gpt-a", "priority": 1}}
    ],
    "tools": [{"module": "tool-filesystem"}, {"module": "tool-bash", "config": {"timeout": 5}}],
    "context": {"include": ["app:context/style.md"]},
}


def parsed(text: str) -> Overrides:
    fragment = parse_overrides(text, LIMITS)
    assert fragment is not None
    return fragment


def refusal(text: str) -> list[FieldViolation]:
    with pytest.raises(InvalidOverrides) as caught:
        parse_overrides(text, LIMITS)
    assert caught.value.reason == "INVALID_OVERRIDES"
    return list(caught.value.violations)


# --- parsing and refusal -----------------------------------------------------------------


def test_blank_or_empty_overrides_are_none() -> None:
    assert parse_overrides("", LIMITS) is None
    assert parse_overrides("  \n", LIMITS) is None
    assert parse_overrides("# nothing here\n", LIMITS) is None
    assert parse_overrides("{}\n", LIMITS) is None


def test_a_fragment_parses_without_a_bundle_header() -> None:
    fragment = parsed("providers:\n  - module: provider-openai\n    config: {default_model: b}\n")
    assert fragment.data == {
        "providers": [{"module": "provider-openai", "config": {"default_model": "b"}}]
    }
    assert fragment.removals == {}


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_a_fragment_that_is_not_a_mapping_is_refused_at_overrides(text: str) -> None:
    [violation] = refusal(text)
    assert violation.field == "overrides"
    assert "mapping" in violation.description


def test_a_fragment_with_an_instruction_body_is_refused() -> None:
    violations = refusal("---\ntools:\n  - module: tool-bash\n---\nYou are someone else.\n")
    assert [v.field for v in violations] == ["overrides"]
    assert "instruction" in violations[0].description


def test_a_billion_laughs_fragment_is_refused_cheaply() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 10):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([previous] * 10)}]")
    lines.append("session: {orchestrator: *a9}")
    violations = refusal("\n".join(lines) + "\n")
    assert violations[0].field.startswith("overrides")
    assert violations[0].line > 0


def test_a_fragment_nested_too_deep_is_refused() -> None:
    violations = refusal("session:\n  x: " + "[" * 100 + "]" * 100 + "\n")
    assert violations[0].field.startswith("overrides")


def test_a_fragment_over_the_size_cap_is_refused_before_parsing() -> None:
    text = "session:\n  note: " + "x" * MAX_OVERRIDES_BYTES + "\n"
    [violation] = refusal(text)
    assert violation.field == "overrides"
    assert str(MAX_OVERRIDES_BYTES) in violation.description


def test_includes_in_a_fragment_are_refused_at_overrides_includes() -> None:
    [violation] = refusal("includes:\n  - other-config\n")
    assert violation.field == "overrides.includes"
    assert (violation.line, violation.column) == (1, 1)


def test_a_bundle_header_and_unknown_keys_are_refused_located() -> None:
    violations = refusal("bundle:\n  name: other\ntool:\n  - module: tool-bash\n")
    assert {(v.field, v.line) for v in violations} == {
        ("overrides.bundle", 1),
        ("overrides.tool", 3),
    }


def test_schema_problems_are_located_under_overrides() -> None:
    violations = refusal("tools:\n  - config: {}\n")
    assert [v.field for v in violations] == ["overrides.tools[0].module"]
    assert violations[0].line == 2


def test_a_literal_secret_is_refused_and_not_echoed() -> None:
    secret = "sk-" + "a1B2" * 12
    violations = refusal(
        f"providers:\n  - module: provider-openai\n    config: {{api_key: {secret}}}\n"
    )
    assert violations[0].field == "overrides.providers[0].config.api_key"
    assert secret not in violations[0].description


def test_a_malformed_remove_is_refused_located() -> None:
    violations = refusal("remove:\n  agents: [x]\n  tools: tool-bash\n")
    assert {v.field for v in violations} == {"overrides.remove.agents", "overrides.remove.tools"}


# --- the cache key -------------------------------------------------------------------------


def test_the_digest_ignores_formatting_and_comments_and_key_order() -> None:
    one = parsed("tools:\n  - module: tool-bash\n    config: {a: 1, b: 2}\n")
    two = parsed("# same thing\ntools: [{config: {b: 2, a: 1}, module: tool-bash}]\n")
    assert one.digest == two.digest


@pytest.mark.parametrize(
    "other",
    [
        "tools: [{module: tool-bash, config: {a: '1'}}]\n",  # a string, not a number
        "tools: [{module: tool-bash, config: {a: true}}]\n",  # true is not 1
        "tools: [{module: tool-bash, config: {a: 2}}]\n",
        "remove: {tools: [tool-bash]}\n",
    ],
)
def test_different_overrides_have_different_digests(other: str) -> None:
    assert parsed("tools: [{module: tool-bash, config: {a: 1}}]\n").digest != parsed(other).digest


# --- composition ---------------------------------------------------------------------------


def test_an_override_changes_the_model_and_keeps_the_rest_of_the_provider() -> None:
    fragment = parsed(
        "providers:\n  - module: provider-openai\n    config: {default_model: gpt-b}\n"
    )
    composed = apply_overrides(COMPOSED, fragment)
    assert composed["providers"] == [
        {"module": "provider-openai", "config": {"default_model": "gpt-b", "priority": 1}}
    ]
    assert composed["tools"] == COMPOSED["tools"]
    # The config's own document is left as it was (it is shared through the cache).
    assert COMPOSED["providers"][0]["config"]["default_model"] == "gpt-a"


def test_an_override_removes_a_tool() -> None:
    composed = apply_overrides(COMPOSED, parsed("remove:\n  tools: [tool-bash]\n"))
    assert [t["module"] for t in composed["tools"]] == ["tool-filesystem"]


def test_a_removed_entry_can_be_declared_afresh() -> None:
    fragment = parsed("remove: {tools: [tool-bash]}\ntools: [{module: tool-bash}]\n")
    composed = apply_overrides(COMPOSED, fragment)
    # The config's settings of the entry are gone with it, not merged under the new one.
    assert composed["tools"] == [{"module": "tool-filesystem"}, {"module": "tool-bash"}]


def test_removing_what_the_config_does_not_have_is_refused_located() -> None:
    fragment = parsed("remove:\n  tools: [tool-filesystem, tool-web]\n")
    with pytest.raises(InvalidOverrides) as caught:
        apply_overrides(COMPOSED, fragment)
    [violation] = caught.value.violations
    assert violation.field == "overrides.remove.tools[1]"
    assert violation.line == 2
    assert "tool-web" in violation.description
    assert "tool-bash" in violation.description


def test_an_override_adds_context_after_the_configs() -> None:
    composed = apply_overrides(COMPOSED, parsed("context:\n  include: [app:context/extra.md]\n"))
    assert composed["context"] == {"include": ["app:context/style.md", "app:context/extra.md"]}


def test_an_override_changes_session_settings_by_deep_merge() -> None:
    composed = apply_overrides(COMPOSED, parsed("session:\n  orchestrator: loop-basic\n"))
    assert composed["session"] == {"orchestrator": "loop-basic", "context": "context-simple"}


# --- locating preparation problems ---------------------------------------------------------


def test_problems_of_the_fragments_entries_are_located_in_it() -> None:
    fragment = parsed(
        "tools:\n  - module: tool-nope\nproviders:\n"
        "  - module: provider-openai\n    config: {api_key: '${NOT_ALLOWED}'}\n"
    )
    composed = apply_overrides(COMPOSED, fragment)
    problems = [
        # Reported for the fragment's layer at the entry's place in the composed document.
        PreconditionViolation("MODULE_NOT_INSTALLED", "overrides: tools[2]", "not installed"),
        PreconditionViolation("ENV_NOT_AVAILABLE", "providers[0].config.api_key", "not allowed"),
        # The config's own settings are not the fragment's doing.
        PreconditionViolation("TOOL_PATH_NOT_ALLOWED", "tools[1].config.timeout", "too far"),
        PreconditionViolation("MODULE_NOT_INSTALLED", "config:app: tools[0]", "not installed"),
    ]
    located = fragment_violations(problems, fragment, composed)
    assert [(v.field, v.line) for v in located] == [
        ("overrides.tools[0].module", 2),
        ("overrides.providers[0].config.api_key", 5),
    ]
    assert located[0].description == "MODULE_NOT_INSTALLED: not installed"


# --- the session use cases, against the in-memory fakes -----------------------------------

TENANT = "t1"
FRAGMENT = "providers:\n  - module: provider-echo\n    config: {default_model: m-b}\n"


@pytest.fixture
def database() -> FakeSessionDatabase:
    return FakeSessionDatabase()


@pytest.fixture
def preparer() -> StubPreparer:
    return StubPreparer()


@pytest.fixture
def sessions(database: FakeSessionDatabase, preparer: StubPreparer) -> SessionService:
    return SessionService(database.unit_of_work, preparer)


async def test_a_session_is_prepared_with_its_overrides_and_keeps_them(
    sessions: SessionService, preparer: StubPreparer, database: FakeSessionDatabase
) -> None:
    created = await sessions.create(TENANT, "cfg", session_id="s1", start=True, overrides=FRAGMENT)
    assert preparer.overrides == [FRAGMENT]
    assert (await sessions.get(TENANT, "s1")).overrides == FRAGMENT == created.overrides
    # Its turns are prepared with them too.
    runner = RecordingRunner()
    turns = TurnService(database.unit_of_work, runner, TurnSignals(), TurnOptions())
    await turns.send(TENANT, "s1", "hello")
    [job] = runner.jobs
    assert job.overrides == FRAGMENT


async def test_refused_overrides_make_no_session(
    sessions: SessionService, preparer: StubPreparer
) -> None:
    preparer.refused[FRAGMENT] = FieldViolation("overrides.tools[0].module", "not installed")
    with pytest.raises(InvalidOverrides) as caught:
        await sessions.create(TENANT, "cfg", session_id="s1", overrides=FRAGMENT)
    assert [v.field for v in caught.value.violations] == ["overrides.tools[0].module"]
    listed = await sessions.list_sessions(TENANT, "", 10, "")
    assert listed.items == []


async def test_a_request_id_retried_with_other_overrides_is_another_request(
    sessions: SessionService,
) -> None:
    await sessions.create(TENANT, "cfg", request_id="r-1", overrides=FRAGMENT)
    with pytest.raises(InvalidArgument):
        await sessions.create(TENANT, "cfg", request_id="r-1", overrides="")


async def test_resume_with_upgrade_revalidates_the_overrides_against_the_new_revision(
    sessions: SessionService, preparer: StubPreparer
) -> None:
    await sessions.create(TENANT, "cfg", session_id="s1", config_revision=1, overrides=FRAGMENT)
    await sessions.transition(TENANT, "s1", Transition.TERMINATE)
    preparer.latest = 7
    # The new revision no longer has what the overrides rely on.
    preparer.refused[FRAGMENT] = FieldViolation("overrides.remove.tools[0]", "no such tool")
    with pytest.raises(FailedPrecondition) as caught:
        await sessions.transition(TENANT, "s1", Transition.RESUME, upgrade_config=True)
    assert caught.value.reason == "OVERRIDES_DO_NOT_APPLY"
    assert [v.subject for v in caught.value.violations] == ["overrides.remove.tools[0]"]
    kept = await sessions.get(TENANT, "s1")
    assert (kept.status, kept.config_revision) == (Status.TERMINATED, 1)
    del preparer.refused[FRAGMENT]
    upgraded = await sessions.transition(TENANT, "s1", Transition.RESUME, upgrade_config=True)
    assert (upgraded.config_revision, upgraded.overrides) == (7, FRAGMENT)
    assert preparer.overrides[-1] == FRAGMENT

"""Skills of imported packages reach the model through tool-skills, in real turns.

A package with `skills/NAME/SKILL.md` folders is imported with ImportBundle; preparation
hands its skills to the tool, the echo provider's script calls `load_skill`, and the tool
results come back in the turn's events. Edits to a skill file show in the next turn.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from google.protobuf import field_mask_pb2

from session_service.prepare import preparer
from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.modules import installed_with
from tests.support.pair import Stack, running_pair
from tests.support.turns import Event, collect, send

MODULES = {"tool": {"tool-skills": "session_service.modules.skills:SkillsTool"}}

REVIEW = """---
name: review
description: How this team reviews a change
version: 2
license: MIT
---
# Reviewing

Read the diff twice, then go through reference/checklist.md.
"""
CHECKLIST = "- the tests pass\n- names say what things are\n"
DEPLOY = """---
name: deploy
description: Shipping a release
---
Tag, build, roll out one region at a time.
"""
# Broken YAML in the frontmatter: skipped with a warning, the rest still works.
BROKEN = "---\nname: broken\ndescription: [never closed\n---\nNot a skill.\n"
RUNBOOK = "---\ndescription: What to do when paging fires\n---\nBreathe. Then look.\n"


def root_bundle(
    script: list[dict[str, Any]], tool: Mapping[str, Any] | None = None, name: str = "skillkit"
) -> str:
    """A package's root bundle: the echo provider playing script, and tool-skills."""
    document = {
        "bundle": {"name": name},
        "session": {"orchestrator": "loop-streaming", "context": "context-simple"},
        "providers": [{"module": "provider-echo", "config": {"script": script}}],
        "tools": [{"module": "tool-skills", **({"config": dict(tool)} if tool else {})}],
    }
    return f"---\n{json.dumps(document, indent=2)}\n---\nYou are a test assistant.\n"


def call(**arguments: Any) -> dict[str, Any]:
    return {"name": "load_skill", "arguments": arguments}


LOAD_SCRIPT: list[dict[str, Any]] = [
    {"tool_calls": [call(list=True)]},
    {
        "tool_calls": [
            call(skill_name="review"),
            call(skill_name="review", file="reference/checklist.md"),
        ]
    },
    {"reply": "done"},
]


async def import_files(stack: Stack, files: Mapping[str, str]) -> None:
    await stack.configs.ImportBundle(
        config_service_pb2.ImportBundleRequest(
            files=[
                config_service_pb2.BundleFile(path=path, content=text.encode())
                for path, text in sorted(files.items())
            ]
        )
    )


async def config_named(stack: Stack, name: str) -> config_pb2.Config:
    page = await stack.configs.ListConfigs(
        config_service_pb2.ListConfigsRequest(filter=f"name = {json.dumps(name)}")
    )
    [config] = page.configs
    return config


async def prepare(stack: Stack, name: str) -> session_service_pb2.PrepareConfigResponse:
    config = await config_named(stack, name)
    return await stack.sessions.PrepareConfig(
        session_service_pb2.PrepareConfigRequest(config_id=config.config_id)
    )


async def start(stack: Stack, name: str) -> str:
    config = await config_named(stack, name)
    session = await stack.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(config_id=config.config_id, start=True)
    )
    return str(session.session_id)


def results(events: list[Event]) -> list[tuple[str, bool]]:
    """Each tool call's (result, is_error), in order."""
    return [
        (e.tool_call_completed.result, e.tool_call_completed.is_error)
        for e in events
        if e.HasField("tool_call_completed")
    ]


def decoded(result: tuple[str, bool]) -> dict[str, Any]:
    text, is_error = result
    assert not is_error, text
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_pair(
        database_url, modules=installed_with(MODULES), config={"watch_poll_seconds": 0.5}
    ) as running:
        yield running


async def test_a_turn_lists_and_loads_the_packages_skills_and_sees_edits(stack: Stack) -> None:
    await import_files(
        stack,
        {
            "bundle.md": root_bundle(LOAD_SCRIPT),
            "skills/review/SKILL.md": REVIEW,
            "skills/review/reference/checklist.md": CHECKLIST,
            "skills/deploy/SKILL.md": DEPLOY,
        },
    )
    prepared = await prepare(stack, "skillkit")
    assert prepared.valid, prepared.violations
    assert list(prepared.warnings) == []
    assert ("tool", "tool-skills") in [(m.kind, m.module) for m in prepared.modules]
    # The skills travel in the module's config, which PrepareConfig does not show.
    assert "Read the diff twice" not in str(prepared)

    session_id = await start(stack, "skillkit")
    events = await collect(send(stack.sessions, session_id, "review my change"))
    listed, loaded, companion = results(events)
    assert decoded(listed)["skills"] == [
        {"name": "deploy", "description": "Shipping a release"},
        {"name": "review", "description": "How this team reviews a change"},
    ]
    review = decoded(loaded)
    assert review["content"] == (
        "# review\n\n# Reviewing\n\nRead the diff twice, then go through reference/checklist.md."
    )
    assert review["skill_directory"] == "skillkit:skills/review"
    assert review["files"] == ["reference/checklist.md"]
    assert decoded(companion)["content"] == CHECKLIST
    assert events[-1].HasField("turn_completed")

    skill = await config_named(stack, "skillkit:skills/review/SKILL.md")
    await stack.configs.UpdateConfig(
        config_service_pb2.UpdateConfigRequest(
            config=config_pb2.Config(
                config_id=skill.config_id,
                yaml_content=REVIEW.replace("Read the diff twice", "Read the diff once"),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["yaml_content"]),
        )
    )
    # The change stream re-prepares the bundle within moments; the next turn reads the edit.
    for _ in range(50):
        events = await collect(send(stack.sessions, session_id, "again"))
        content = decoded(results(events)[1])["content"]
        if "Read the diff once" in content:
            break
        assert "Read the diff twice" in content
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the edited skill never reached a turn")


async def test_included_packages_named_skills_and_broken_ones(sqlite_url: str) -> None:
    async with running_pair(sqlite_url, modules=installed_with(MODULES)) as stack:
        await import_files(
            stack,
            {
                "bundle.md": root_bundle([], name="skillkit"),
                "skills/review/SKILL.md": REVIEW,
                "skills/broken/SKILL.md": BROKEN,
                "skills/notes.md": "Not in a skill folder.\n",
            },
        )
        await import_files(
            stack,
            {
                "bundle.md": "---\nbundle:\n  name: ops\n---\n",
                "skills/runbook/SKILL.md": RUNBOOK,
                "skills/other/SKILL.md": DEPLOY.replace("deploy", "other"),
            },
        )
        # A config of its own composing skillkit, naming one skill of ops besides.
        script: list[dict[str, Any]] = [
            {"tool_calls": [call(list=True), call(skill_name="runbook")]},
            {"reply": "ok"},
        ]
        app = root_bundle(script, {"skills": ["ops:skills/runbook"]}, name="app")
        await stack.configs.CreateConfig(
            config_service_pb2.CreateConfigRequest(
                config_id="app",
                config=config_pb2.Config(
                    name="app",
                    yaml_content=app.replace("---\n{", '---\n{"includes": ["skillkit"], ', 1),
                ),
            )
        )
        prepared = await prepare(stack, "app")
        assert prepared.valid, prepared.violations
        [warning] = prepared.warnings
        assert warning.field == "skillkit:skills/broken/SKILL.md"
        assert warning.message.startswith("skill skipped: ")
        assert warning.message.endswith("(line 4, column 1)")

        session_id = await start(stack, "app")
        events = await collect(send(stack.sessions, session_id, "what can you do?"))
        listed, runbook = results(events)
        assert [s["name"] for s in decoded(listed)["skills"]] == ["review", "runbook"]
        # A SKILL.md without a name is called by its folder.
        assert decoded(runbook)["content"] == "# runbook\n\nBreathe. Then look."
        assert decoded(runbook)["skill_directory"] == "ops:skills/runbook"


async def test_skills_named_by_a_package_address(database_url: str) -> None:
    async with running_pair(database_url, modules=installed_with(MODULES)) as stack:
        await stack.configs.ImportBundle(
            config_service_pb2.ImportBundleRequest(
                files=[
                    config_service_pb2.BundleFile(path=path, content=text.encode())
                    for path, text in {
                        "bundle.md": "---\nbundle:\n  name: ops\n---\n",
                        "skills/runbook/SKILL.md": RUNBOOK,
                        "skills/deploy/SKILL.md": DEPLOY,
                    }.items()
                ],
                source_uri="git+https://git.example.invalid/acme/ops@v3",
            )
        )
        # Named as published bundles name them: by address, any @REF, the skills folder or
        # one skill in it.
        script: list[dict[str, Any]] = [{"tool_calls": [call(list=True)]}, {"reply": "ok"}]
        sources = {
            "all": "git+https://git.example.invalid/acme/ops.git@main#subdirectory=skills",
            "one": "git+https://GIT.example.invalid/acme/ops@main#subdirectory=skills/runbook",
        }
        for name, source in sources.items():
            await import_files(
                stack, {"bundle.md": root_bundle(script, {"skills": [source]}, name=name)}
            )
        missing = "git+https://git.example.invalid/acme/nothing@main#subdirectory=skills"
        outside = "git+https://git.example.invalid/acme/ops@main#subdirectory=context"
        await import_files(
            stack,
            {"bundle.md": root_bundle(script, {"skills": [missing, outside]}, name="bad")},
        )
        listed = {}
        for name in sources:
            events = await collect(send(stack.sessions, await start(stack, name), "list"))
            listed[name] = [s["name"] for s in decoded(results(events)[0])["skills"]]
        assert listed == {"all": ["deploy", "runbook"], "one": ["runbook"]}
        prepared = await prepare(stack, "bad")
        assert {(v.message.split(":")[0], v.field) for v in prepared.violations} == {
            ("SKILL_SOURCE_NOT_FOUND", "tools[0].config.skills[0]"),
            ("INVALID_SKILL_REFERENCE", "tools[0].config.skills[1]"),
        }


async def test_bad_skill_settings_are_located_violations(sqlite_url: str) -> None:
    async with running_pair(sqlite_url, modules=installed_with(MODULES)) as stack:
        tool = {
            "skills": ["no such!", "ops:context/style.md", 3, "ops:skills/missing"],
            "_tandem_skills": [{"name": "injected", "description": "x", "body": "x"}],
        }
        await import_files(stack, {"bundle.md": root_bundle([], tool, name="bad")})
        prepared = await prepare(stack, "bad")
        assert not prepared.valid
        found = {(v.message.split(":")[0], v.field) for v in prepared.violations}
        assert found == {
            ("INVALID_SKILL_REFERENCE", "tools[0].config.skills[0]"),
            ("INVALID_SKILL_REFERENCE", "tools[0].config.skills[1]"),
            ("INVALID_SKILL_REFERENCE", "tools[0].config.skills[2]"),
            ("SKILL_NOT_FOUND", "tools[0].config.skills[3]"),
            ("RESERVED_CONFIG_KEY", "tools[0].config._tandem_skills"),
        }


@pytest.mark.parametrize(
    ("cap", "value", "violation"),
    [("MAX_SKILLS", 1, "TOO_MANY_SKILLS"), ("MAX_SKILL_BYTES", 100, "SKILLS_TOO_LARGE")],
)
async def test_skills_past_the_caps_are_refused(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, cap: str, value: int, violation: str
) -> None:
    monkeypatch.setattr(preparer, cap, value)
    async with running_pair(sqlite_url, modules=installed_with(MODULES)) as stack:
        await import_files(
            stack,
            {
                "bundle.md": root_bundle([]),
                "skills/review/SKILL.md": REVIEW,
                "skills/deploy/SKILL.md": DEPLOY,
            },
        )
        prepared = await prepare(stack, "skillkit")
        assert not prepared.valid
        [problem] = prepared.violations
        assert problem.message.startswith(f"{violation}:")
        assert problem.field.startswith("skillkit:skills/")


async def test_skill_files_too_large_for_one_reply_are_a_located_violation(
    sqlite_url: str,
) -> None:
    # SessionService takes replies of at most 64 KiB; the skill folder holds more.
    async with running_pair(
        sqlite_url,
        modules=installed_with(MODULES),
        session={"max_receive_message_bytes": 64 * 1024},
    ) as stack:
        await import_files(
            stack,
            {
                "bundle.md": root_bundle([]),
                "skills/review/SKILL.md": REVIEW,
                "skills/review/reference/big.md": "x" * (100 * 1024),
            },
        )
        prepared = await prepare(stack, "skillkit")
        assert not prepared.valid
        [problem] = prepared.violations
        assert problem.message.startswith("SKILLS_TOO_LARGE:")
        assert problem.field == "skillkit:skills/*"

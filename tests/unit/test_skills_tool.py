"""The tool-skills module from the config preparation hands it: list, search, info, load and
companion files, with Amplifier's tool name and parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from session_service.modules.skills import SKILLS_KEY, SkillsTool
from session_service.turns.protocols import ToolResult
from session_service.workspace import Sandbox

REVIEW = {
    "name": "review",
    "description": "How we review pull requests",
    "namespace": "acme",
    "folder": "skills/review",
    "body": "Read the diff twice.\nSee reference/checklist.md.",
    "files": {"reference/checklist.md": "- tests pass\n- names are clear\n"},
    "version": "1.2",
    "license": "MIT",
}
DEPLOY = {
    "name": "deploy",
    "description": "Shipping a release to production",
    "namespace": "acme",
    "folder": "skills/deploy",
    "body": "Tag, build, roll out.",
    "files": {},
    "version": "",
    "license": "",
}


def tool(tmp_path: Path, skills: list[dict[str, Any]] | None = None) -> SkillsTool:
    config = {SKILLS_KEY: [REVIEW, DEPLOY] if skills is None else skills}
    return SkillsTool(config, Sandbox(tmp_path.resolve()))


def output(result: ToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    decoded = json.loads(result.content)
    assert isinstance(decoded, dict)
    return decoded


def test_the_tool_is_amplifiers_load_skill_with_a_file_parameter(tmp_path: Path) -> None:
    [spec] = tool(tmp_path).specs()
    assert spec.name == "load_skill"
    assert spec.description.startswith("Load domain knowledge from an available skill.")
    assert "list=true" in spec.description
    assert "file=" in spec.description
    properties = spec.parameters["properties"]
    assert set(properties) == {"skill_name", "list", "search", "info", "file"}
    assert properties["list"]["type"] == "boolean"
    assert "required" not in spec.parameters


async def test_list_names_every_skill_in_order(tmp_path: Path) -> None:
    listed = output(await tool(tmp_path).call("load_skill", {"list": True}))
    assert listed["skills"] == [
        {"name": "deploy", "description": "Shipping a release to production"},
        {"name": "review", "description": "How we review pull requests"},
    ]
    assert "**review**: How we review pull requests" in listed["message"]


async def test_list_without_skills_says_so(tmp_path: Path) -> None:
    listed = output(await tool(tmp_path, []).call("load_skill", {"list": True}))
    assert "No skills found" in listed["message"]
    assert "skills" not in listed


async def test_search_matches_names_and_descriptions_ignoring_case(tmp_path: Path) -> None:
    skills = tool(tmp_path)
    by_description = output(await skills.call("load_skill", {"search": "PRODUCTION"}))
    assert [m["name"] for m in by_description["matches"]] == ["deploy"]
    by_name = output(await skills.call("load_skill", {"search": "rev"}))
    assert [m["name"] for m in by_name["matches"]] == ["review"]
    nothing = output(await skills.call("load_skill", {"search": "kubernetes"}))
    assert nothing == {"message": "No skills matching 'kubernetes'"}


async def test_info_gives_the_metadata_without_the_body(tmp_path: Path) -> None:
    info = output(await tool(tmp_path).call("load_skill", {"info": "review"}))
    assert info == {
        "name": "review",
        "description": "How we review pull requests",
        "version": "1.2",
        "license": "MIT",
        "path": "acme:skills/review/SKILL.md",
        "files": ["reference/checklist.md"],
    }


async def test_loading_a_skill_returns_its_body_and_directory(tmp_path: Path) -> None:
    loaded = output(await tool(tmp_path).call("load_skill", {"skill_name": "review"}))
    assert loaded["content"] == "# review\n\nRead the diff twice.\nSee reference/checklist.md."
    assert loaded["skill_name"] == "review"
    assert loaded["skill_directory"] == "acme:skills/review"
    assert loaded["loaded_from"] == "acme"
    assert loaded["files"] == ["reference/checklist.md"]


@pytest.mark.parametrize(
    "arguments",
    [
        {"skill_name": "review", "file": "reference/checklist.md"},
        {"skill_name": "review", "file": "./reference/checklist.md"},
        # skill_directory + '/path', as the description suggests.
        {"skill_name": "review", "file": "acme:skills/review/reference/checklist.md"},
        {"file": "acme:skills/review/reference/checklist.md"},
    ],
)
async def test_a_companion_file_is_read_through_the_tool(
    tmp_path: Path, arguments: dict[str, Any]
) -> None:
    read = output(await tool(tmp_path).call("load_skill", arguments))
    assert read == {
        "content": "- tests pass\n- names are clear\n",
        "skill_name": "review",
        "file": "reference/checklist.md",
        "skill_directory": "acme:skills/review",
    }


async def test_a_file_the_skill_lacks_is_an_error_naming_its_files(tmp_path: Path) -> None:
    skills = tool(tmp_path)
    for path in ("../../etc/passwd", "/etc/passwd", "reference/other.md"):
        result = await skills.call("load_skill", {"skill_name": "review", "file": path})
        assert result.is_error
        assert result.content == (
            f"Skill 'review' has no file '{path}'. Its files: reference/checklist.md"
        )
    # Another skill's file is not this one's.
    other = await skills.call(
        "load_skill", {"skill_name": "deploy", "file": "acme:skills/review/reference/checklist.md"}
    )
    assert other.is_error
    assert "Its files: none" in other.content


async def test_an_unknown_skill_is_an_error_listing_the_available_ones(tmp_path: Path) -> None:
    skills = tool(tmp_path)
    for arguments in ({"skill_name": "security"}, {"info": "security"}):
        result = await skills.call("load_skill", arguments)
        assert result.is_error
        assert result.content == "Skill 'security' not found. Available: deploy, review"


async def test_a_call_with_nothing_to_do_says_what_it_takes(tmp_path: Path) -> None:
    result = await tool(tmp_path).call("load_skill", {})
    assert result.is_error
    assert result.content == "Must provide skill_name, list=true, search='term', or info='name'"


async def test_arguments_of_the_wrong_type_are_errors(tmp_path: Path) -> None:
    skills = tool(tmp_path)
    result = await skills.call("load_skill", {"skill_name": ["review"]})
    assert result == ToolResult("skill_name must be a string", is_error=True)


def test_a_config_without_skills_offers_none_and_a_malformed_one_is_refused(
    tmp_path: Path,
) -> None:
    sandbox = Sandbox(tmp_path.resolve())
    assert SkillsTool({}, sandbox).skills == {}
    with pytest.raises(ValueError, match=SKILLS_KEY):
        SkillsTool({SKILLS_KEY: "review"}, sandbox)
    with pytest.raises(ValueError, match="files"):
        SkillsTool({SKILLS_KEY: [{**REVIEW, "files": {"x.md": 3}}]}, sandbox)


def test_the_config_keys_are_the_bundle_key_and_the_reserved_one() -> None:
    assert frozenset({"skills", SKILLS_KEY}) == SkillsTool.CONFIG_KEYS

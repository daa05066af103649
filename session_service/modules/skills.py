"""Lists the skills of the session's bundle packages and loads one on request (`load_skill`).

A skill is a folder of an imported package: `NS:skills/NAME/SKILL.md` (YAML frontmatter with
`name`, `description`, optionally `version` and `license`, then the markdown body) plus the
folder's other files (`NS:skills/NAME/reference/x.md` ...). They are stored in ConfigService,
not on disk, so preparation reads them and hands them to this module; the tool name,
description and parameters are Amplifier's, so prompts written for its `load_skill` work.

Config keys (see CONFIG_KEYS):

- `skills`: read by preparation, not by this class. A list of extra sources besides the
  packages the bundle composes: `NS` (every skill of package NS) or `NS:skills/NAME` (one
  skill). A skill name given twice keeps the last source: the outer package over the ones it
  includes, then this list in its order.
- `_tandem_skills`: reserved. Preparation fills it with the skills (plain data, one mapping
  per skill); a bundle that sets it itself is refused when it is prepared.

`skill_directory` in a loaded skill is the folder's name prefix (`acme:skills/review`), and a
companion file is read through this tool with `file` (a Tandem addition to Amplifier's
parameters): a path inside the folder (`reference/x.md`), or the whole name
(`acme:skills/review/reference/x.md`). Nothing here touches the host's files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from session_service.prepare.model import PreparedSkill
from session_service.turns.protocols import ToolResult, ToolSpec
from session_service.workspace import Sandbox

SKILLS_KEY = "_tandem_skills"
TOOL_NAME = "load_skill"

# Amplifier's description, then how companion files are read here.
DESCRIPTION = (
    "Load domain knowledge from an available skill. Skills provide "
    "specialized knowledge, workflows, best practices, and standards. "
    "Use when you need domain expertise, coding guidelines, or "
    "architectural patterns. Call with list=true to see all skills. "
    "When loaded, returns skill_directory path - use this to read companion "
    "files referenced in the skill (e.g., skill_directory + '/reference/file.md')."
    " Companion files are not on disk: read one with this tool, passing skill_name and"
    " file (e.g., file='reference/file.md')."
)

PARAMETERS: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "skill_name": {
            "type": "string",
            "description": "Name of skill to load (e.g., 'design-patterns', 'python-standards')",
        },
        "list": {"type": "boolean", "description": "If true, return list of all available skills"},
        "search": {
            "type": "string",
            "description": "Search term to filter skills by name or description",
        },
        "info": {
            "type": "string",
            "description": "Get metadata for a specific skill without loading full content",
        },
        "file": {
            "type": "string",
            "description": "With skill_name: a companion file of the skill to read instead of"
            " the skill itself, as a path inside its skill_directory (e.g., 'reference/file.md')",
        },
    },
}


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{SKILLS_KEY}: {key} must be a string")
    return value


def _skills(config: Mapping[str, Any]) -> dict[str, PreparedSkill]:
    """The skills preparation handed over, by name."""
    given = config.get(SKILLS_KEY)
    if given is None:
        return {}
    if not isinstance(given, list) or not all(isinstance(e, Mapping) for e in given):
        raise ValueError(f"{SKILLS_KEY} must be a list of skills")
    skills: dict[str, PreparedSkill] = {}
    for entry in given:
        files = entry.get("files") or {}
        if not isinstance(files, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise ValueError(f"{SKILLS_KEY}: files must map paths to text")
        skill = PreparedSkill(
            name=_text(entry, "name"),
            description=_text(entry, "description"),
            namespace=_text(entry, "namespace"),
            folder=_text(entry, "folder"),
            body=_text(entry, "body"),
            files=dict(files),
            version=_text(entry, "version"),
            license=_text(entry, "license"),
        )
        skills[skill.name] = skill
    return skills


def _directory(skill: PreparedSkill) -> str:
    return f"{skill.namespace}:{skill.folder}"


def _ok(output: Mapping[str, Any]) -> ToolResult:
    return ToolResult(json.dumps(output, ensure_ascii=False, indent=2))


class SkillsTool:
    """Offers `load_skill`: list, search, describe and load the skills preparation found."""

    CONFIG_KEYS: frozenset[str] = frozenset({"skills", SKILLS_KEY})

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        # Skills come from ConfigService through preparation; the sandbox is never needed.
        del sandbox
        self.skills = _skills(config)

    def specs(self) -> Sequence[ToolSpec]:
        """The load_skill tool."""
        return (ToolSpec(TOOL_NAME, DESCRIPTION, PARAMETERS),)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Lists, searches, describes or loads, as the arguments ask (first one given wins)."""
        if name != TOOL_NAME:
            return ToolResult(f"unknown tool {name!r}", is_error=True)
        for key in ("skill_name", "search", "info", "file"):
            value = arguments.get(key)
            if value is not None and not isinstance(value, str):
                return ToolResult(f"{key} must be a string", is_error=True)
        if arguments.get("list"):
            return self._list()
        if search := arguments.get("search"):
            return self._search(search)
        if info := arguments.get("info"):
            return self._info(info)
        skill_name = arguments.get("skill_name")
        file = arguments.get("file")
        if file and not skill_name:
            skill_name = self._owner(file)
        if not skill_name:
            return ToolResult(
                "Must provide skill_name, list=true, search='term', or info='name'",
                is_error=True,
            )
        if file:
            return self._file(skill_name, file)
        return self._load(skill_name)

    def _missing(self, skill_name: str) -> ToolResult:
        available = ", ".join(sorted(self.skills))
        return ToolResult(f"Skill '{skill_name}' not found. Available: {available}", is_error=True)

    def _list(self) -> ToolResult:
        if not self.skills:
            return _ok({"message": "No skills found in the session's bundle packages"})
        listed = [
            {"name": n, "description": self.skills[n].description} for n in sorted(self.skills)
        ]
        lines = ["Available Skills:", ""]
        lines.extend(f"**{s['name']}**: {s['description']}" for s in listed)
        return _ok({"message": "\n".join(lines), "skills": listed})

    def _search(self, term: str) -> ToolResult:
        needle = term.lower()
        matches = [
            {"name": n, "description": s.description}
            for n, s in sorted(self.skills.items())
            if needle in n.lower() or needle in s.description.lower()
        ]
        if not matches:
            return _ok({"message": f"No skills matching '{term}'"})
        lines = [f"Skills matching '{term}':", ""]
        lines.extend(f"**{m['name']}**: {m['description']}" for m in matches)
        return _ok({"message": "\n".join(lines), "matches": matches})

    def _info(self, skill_name: str) -> ToolResult:
        skill = self.skills.get(skill_name)
        if skill is None:
            return self._missing(skill_name)
        return _ok(
            {
                "name": skill.name,
                "description": skill.description,
                "version": skill.version or None,
                "license": skill.license or None,
                "path": f"{_directory(skill)}/SKILL.md",
                "files": sorted(skill.files),
            }
        )

    def _load(self, skill_name: str) -> ToolResult:
        skill = self.skills.get(skill_name)
        if skill is None:
            return self._missing(skill_name)
        return _ok(
            {
                "content": f"# {skill.name}\n\n{skill.body}",
                "skill_name": skill.name,
                "skill_directory": _directory(skill),
                "loaded_from": skill.namespace,
                "files": sorted(skill.files),
            }
        )

    def _owner(self, file: str) -> str:
        """The skill whose skill_directory a full companion file name starts with, or ""."""
        for skill in self.skills.values():
            if file.startswith(_directory(skill) + "/"):
                return skill.name
        return ""

    def _file(self, skill_name: str, file: str) -> ToolResult:
        skill = self.skills.get(skill_name)
        if skill is None:
            return self._missing(skill_name)
        directory = _directory(skill)
        # The model may pass skill_directory + '/path', as the description suggests.
        path = file.removeprefix(directory + "/").removeprefix("./")
        text = skill.files.get(path)
        if text is None:
            if path == "SKILL.md":
                return self._load(skill_name)
            available = ", ".join(sorted(skill.files)) or "none"
            return ToolResult(
                f"Skill '{skill.name}' has no file '{file}'. Its files: {available}",
                is_error=True,
            )
        return _ok(
            {
                "content": text,
                "skill_name": skill.name,
                "file": path,
                "skill_directory": directory,
            }
        )

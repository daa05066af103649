"""Preparing a config revision: validate, compose includes, expand references, resolve modules.

Every problem found is reported at once, each located: which bundle, which field.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from session_service.prepare.cache import Key, PreparedCache
from session_service.prepare.compose import MODULE_LISTS, include_ref, merge_bundles, module_key
from session_service.prepare.egress import EgressPolicy
from session_service.prepare.environment import BundleEnvironment
from session_service.prepare.model import (
    ContextFile,
    PreparationFailed,
    PreparedAgent,
    PreparedBundle,
    PreparedSkill,
    ResolvedModule,
)
from session_service.prepare.modules import ModuleRegistry
from session_service.prepare.overrides import (
    OVERRIDES_LABEL,
    Overrides,
    apply_overrides,
    fragment_violations,
    parse_overrides,
    refused,
)
from session_service.prepare.resolve import Lookups, Resolver
from session_service.prepare.source import ConfigSource, FetchedConfig
from session_service.workspace import Sandbox
from shared.bundle.document import split_parts
from shared.bundle.literal_secrets import is_secret_key
from shared.bundle.loader import load_yaml
from shared.bundle.references import (
    SHIPPED_NAMESPACE,
    Site,
    UnresolvableReference,
    canonical_source,
    document_references,
    find_mentions,
    is_valid_namespace,
    is_valid_path,
    parse_reference,
)
from shared.bundle.refs import EnvReference, substitute
from shared.bundle.validate import Limits, Severity, validate_agent, validate_document
from shared.cpu import CpuSlots
from shared.errors import (
    FailedPrecondition,
    FieldViolation,
    NotFound,
    PreconditionViolation,
    Unavailable,
)
from shared.lru import Lru
from shared.visibility import Readers, caller

_KIND_OF_LIST = {"providers": "provider", "tools": "tool", "hooks": "hook"}
DEFAULT_ORCHESTRATOR = "loop-basic"
DEFAULT_CONTEXT = "context-simple"
# What an agent file may set for the child sessions that run it, besides its `meta`.
AGENT_OVERLAY_KEYS = ("providers", "tools", "hooks", "session")
# Documents parsed at once, off the event loop.
PARSE_SLOTS = 2
# What context files may add to a session's system context, in all.
MAX_CONTEXT_BYTES = 2 * 1024 * 1024
# The tool module that gets the skills of the packages composed, and the config key they
# reach it under. The key is reserved: a bundle that sets it is refused.
SKILLS_MODULE = "tool-skills"
_GIT_SOURCE = "git+"
SKILLS_CONFIG_KEY = "_tandem_skills"
# What skills may hand a session, in all: how many, and their files' text.
MAX_SKILLS = 200
MAX_SKILL_BYTES = 1024 * 1024
# Skill files read per namespace (or named skill): one ListConfigs page at most.
MAX_SKILL_FILES = 1000
SKILLS_FOLDER = "skills"
# Sessions' overrides kept parsed, by their text (each at most 64 KiB).
FRAGMENTS_KEPT = 64


@dataclass(frozen=True)
class ModuleReach:
    """What modules may reach on the host: tools the sandbox, providers the allowed hosts."""

    sandbox: Sandbox
    egress: EgressPolicy

    def check(
        self, registry: ModuleRegistry, kind: str, implementation: str, config: Any
    ) -> list[tuple[str, str, str]]:
        """(violation type, config key, message) for each setting that reaches too far."""
        if kind == "tool":
            scope: Any = self.sandbox
            # A module whose refusals are about more than paths names its own type.
            violation = registry.reach_violation(implementation) or "TOOL_PATH_NOT_ALLOWED"
        elif kind == "provider":
            scope, violation = self.egress, "EGRESS_NOT_ALLOWED"
        else:
            return []
        found = registry.check_config(implementation, config, scope)
        return [(violation, key, message) for key, message in found]


class WatchHealth(Protocol):
    """Whether the change stream is up, so cached entries can be trusted without a check."""

    @property
    def healthy(self) -> bool: ...


@dataclass
class _Composition:
    problems: list[PreconditionViolation] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)
    included: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (id, rev)
    origins: dict[tuple[str, str], str] = field(default_factory=dict)
    # How deep (0: the config itself) the outermost bundle declaring each module entry is.
    depths: dict[tuple[str, str], int] = field(default_factory=dict)
    warnings: list[FieldViolation] = field(default_factory=list)
    lookups: Lookups = field(default_factory=Lookups)
    # Agents by name (later wins) and context files (first load wins), in composition order.
    agents: dict[str, PreparedAgent] = field(default_factory=dict)
    context: dict[str, ContextFile] = field(default_factory=dict)
    context_bytes: int = 0
    # The package namespaces of the bundles composed, the outermost last.
    namespaces: dict[str, None] = field(default_factory=dict)
    # Every stored config composed in, by name: who may see the result depends on them.
    read: dict[str, FetchedConfig] = field(default_factory=dict)

    def include(self, config: FetchedConfig) -> None:
        """Records a stored config the bundle is composed from."""
        self.included[config.name] = (config.config_id, config.revision)
        self.read[config.name] = config


@dataclass(frozen=True)
class _Loaded:
    label: str
    data: dict[str, Any]
    instruction: str
    # The package the document belongs to ("" for a config of its own): bare agent and
    # context names resolve in it.
    namespace: str = ""


class Preparer:
    """Prepares configs, through the cache."""

    def __init__(
        self,
        client: ConfigSource,
        cache: PreparedCache,
        registry: ModuleRegistry,
        environment: BundleEnvironment,
        watch: WatchHealth,
        limits: Limits | None = None,
        reach: ModuleReach | None = None,
    ) -> None:
        self._client = client
        self._resolver = Resolver(client)
        self._cache = cache
        self._registry = registry
        self._environment = environment
        self._watch = watch
        self._limits = limits or Limits()
        self._cpu = CpuSlots(PARSE_SLOTS)
        # What modules may reach, checked before any session runs them.
        self._reach = reach
        # The latest revision seen of each config: the answer while ConfigService is down.
        self._latest: dict[tuple[str, str], int] = {}
        self._inflight: dict[Key, asyncio.Future[PreparedBundle]] = {}
        self._fragments: Lru[str, Overrides] = Lru(FRAGMENTS_KEPT)

    def forget(self, config_id: str, name: str, *, created: bool = False) -> None:
        """A config changed: drop what was derived from it."""
        if not created:
            # A creation leaves the config's known revision as it is (ids are never reused).
            for key in [k for k in self._latest if k[1] == config_id]:
                del self._latest[key]
        self._cache.evict_config(config_id, name, created=created)

    def forget_all(self) -> None:
        """The change stream restarted from scratch: nothing derived can be trusted."""
        self._latest.clear()
        self._cache.clear()

    async def prepare(
        self,
        tenant_id: str,
        config_id: str,
        revision: int,
        time_remaining: float | None,
        *,
        overrides: str = "",
        for_turn: bool = False,
    ) -> PreparedBundle:
        """The prepared bundle of a revision (0: the latest), from cache when it is current.

        A turn of an existing session (for_turn) is gated by the session's visibility, so a
        cached bundle is handed to it without checking who may see its configs.

        overrides, a session's bundle fragment, is composed last; problems it causes are
        InvalidOverrides (INVALID_ARGUMENT) located under "overrides".
        """
        fragment = await self._fragment(overrides)
        generation = self._cache.generation
        fetched: FetchedConfig | None = None
        if revision == 0:
            revision, fetched = await self._latest_revision(tenant_id, config_id, time_remaining)
        # Sessions with the same overrides (by digest) share one entry; none, the plain one.
        key: Key = (
            (tenant_id, config_id, revision, fragment.digest)
            if fragment
            else (tenant_id, config_id, revision)
        )
        cached = self._cache.get(key)
        if cached is not None and (
            self._watch.healthy or await self._still_current(cached, time_remaining)
        ):
            return await self._for_caller(cached, tenant_id, time_remaining, fragment, for_turn)
        running = self._inflight.get(key)
        if running is not None:
            shared = await asyncio.shield(running)
            return await self._for_caller(shared, tenant_id, time_remaining, fragment, for_turn)
        future: asyncio.Future[PreparedBundle] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            if fetched is None or fetched.revision != revision:
                fetched = await self._client.get(config_id, revision, time_remaining)
            prepared = await self._build(tenant_id, fetched, time_remaining, fragment)
            self._cache.put(key, prepared, generation)
            future.set_result(prepared)
            return prepared
        except BaseException as exc:
            future.set_exception(exc)
            # Waiters see the failure; nobody else retrieves it.
            future.exception()
            raise
        finally:
            del self._inflight[key]

    async def _for_caller(
        self,
        bundle: PreparedBundle,
        tenant_id: str,
        time_remaining: float | None,
        fragment: Overrides | None,
        for_turn: bool = False,
    ) -> PreparedBundle:
        """bundle, when the caller may see every config it was composed from.

        A cached or shared bundle was prepared for whoever asked first, and ConfigService
        checked only that caller. Anyone else who may not see one of its configs gets a
        preparation of their own, uncached: exactly what they would get without the cache
        (NOT_FOUND for the config itself, a located failure for an included one).
        """
        viewer = caller()
        if for_turn or all(viewer.sees(readers) for readers in bundle.readers.values()):
            return bundle
        fetched = await self._client.get(bundle.config_id, bundle.revision, time_remaining)
        return await self._build(tenant_id, fetched, time_remaining, fragment)

    async def _fragment(self, text: str) -> Overrides | None:
        """Parsed overrides; a session's are parsed once, not again for each of its turns."""
        if not text.strip():
            return None
        known = self._fragments.get(text)
        if known is not None:
            return known
        parsed = await self._cpu.run(parse_overrides, text, self._limits)
        if parsed is not None:
            self._fragments.put(text, parsed)
        return parsed

    async def _latest_revision(
        self, tenant_id: str, config_id: str, time_remaining: float | None
    ) -> tuple[int, FetchedConfig | None]:
        # Always asked, never taken from the watch: a session created right after an update
        # must get that update, and ConfigService decides what this caller may read.
        known = self._latest.get((tenant_id, config_id))
        try:
            fetched = await self._client.get(config_id, 0, time_remaining)
        except Unavailable:
            # ConfigService is down: a revision we prepared before is still the best answer.
            if known is not None:
                return known, None
            raise
        self._latest[(tenant_id, config_id)] = fetched.revision
        return fetched.revision, fetched

    async def _still_current(self, bundle: PreparedBundle, time_remaining: float | None) -> bool:
        """Without the change stream, check that the configs it includes have not changed."""
        try:
            for name, (config_id, revision) in bundle.included_revisions.items():
                current = await self._client.get_by_name(name, time_remaining)
                if (current.config_id, current.revision) != (config_id, revision):
                    return False
        except NotFound:
            return False
        except Unavailable:
            return True
        return True

    async def _build(
        self,
        tenant_id: str,
        fetched: FetchedConfig,
        time_remaining: float | None,
        fragment: Overrides | None = None,
    ) -> PreparedBundle:
        work = _Composition()
        label = f"config:{fetched.name}"
        root = await self._parse(fetched.yaml_content, label, work, fetched.namespace)
        if root is None:
            raise _failure(fetched, work.problems)
        composed, instruction = await self._compose(root, [fetched.name], work, time_remaining)
        if fragment is not None:
            composed = await self._overlay(composed, fragment, fetched, work, time_remaining)
        masked = copy.deepcopy(composed)
        expanded = self._expand(tenant_id, composed, "", work)
        modules, skills = await self._with_skills(
            self._resolve(expanded, work), work, time_remaining
        )
        agents = await self._agent_modules(tenant_id, expanded, modules, work, time_remaining)
        if work.problems:
            if fragment is not None:
                # The caller's own input is at fault before the config is.
                located = fragment_violations(work.problems, fragment, composed)
                if located:
                    raise refused(located)
            raise _failure(fetched, work.problems)
        provider = default_provider(expanded, work.depths)
        if provider is None:
            work.warnings.append(
                FieldViolation(
                    "providers", "no provider module: turns on this config fail until one is added"
                )
            )
        return PreparedBundle(
            tenant_id=tenant_id,
            config_id=fetched.config_id,
            revision=fetched.revision,
            name=fetched.name,
            document=expanded,
            masked=masked,
            instruction=instruction,
            modules=tuple(modules),
            composed_from=tuple(work.chain),
            # Every name looked up, found or not: a config created later under one of them
            # changes what this bundle composes to.
            included_configs=frozenset(work.lookups.asked),
            included_revisions=dict(work.included),
            readers={c.name: Readers.of(c) for c in (fetched, *work.read.values())},
            warnings=tuple(work.warnings),
            default_provider=provider[0] if provider else "",
            default_provider_field=provider[1] if provider else "",
            agents=agents,
            context=tuple(work.context.values()),
            skills=skills,
        )

    async def _overlay(
        self,
        composed: dict[str, Any],
        fragment: Overrides,
        fetched: FetchedConfig,
        work: _Composition,
        time_remaining: float | None,
    ) -> dict[str, Any]:
        """The session's overrides as the outermost layer: removals, then a merge by the
        rules of includes; the context files and agents it names resolve among the
        tenant's configs, bare names in the config's own package."""
        merged = apply_overrides(composed, fragment)
        layer = _Loaded(OVERRIDES_LABEL, dict(fragment.data), "", fetched.namespace)
        work.chain.append(OVERRIDES_LABEL)
        for list_key in MODULE_LISTS:
            for entry in fragment.data.get(list_key) or []:
                if isinstance(entry, Mapping):
                    entry_key = (list_key, module_key(entry))
                    work.origins[entry_key] = OVERRIDES_LABEL
                    # Outside the config itself (depth 0): it wins a tie for default provider.
                    work.depths[entry_key] = -1
        for part in ("orchestrator", "context"):
            if part in (fragment.data.get("session") or {}):
                work.origins[("session", part)] = OVERRIDES_LABEL
        await self._agents_and_context(layer, work, time_remaining)
        return merged

    async def _agent_modules(
        self,
        tenant_id: str,
        document: Mapping[str, Any],
        parent_modules: Sequence[ResolvedModule],
        work: _Composition,
        time_remaining: float | None,
    ) -> tuple[PreparedAgent, ...]:
        """Each agent, with the modules a child session running it gets.

        An agent file's providers, tools, hooks and session settings are composed over the
        parent's (expanded) document by the rules of includes, then resolved and checked
        like the bundle's own: a module that is not installed, or a setting that reaches too
        far, fails preparation, located under `agents.NAME`. What the agent inherits
        unchanged was reported for the bundle already, and is not reported again.
        """
        reported = {(p.type, p.description) for p in work.problems}
        warned = {(w.field, w.description) for w in work.warnings}
        agents: list[PreparedAgent] = []
        for agent in work.agents.values():
            if not agent.overlay:
                agents.append(agent)
                continue
            label = f"agents.{agent.name}"
            overlay = self._expand(tenant_id, agent.overlay, label, work)
            composed = merge_bundles(document, overlay)
            scratch = _Composition(lookups=work.lookups, namespaces=work.namespaces)
            resolved = await self._agent_skills(
                self._resolve(composed, scratch), parent_modules, scratch, time_remaining
            )
            work.included.update(scratch.included)
            work.read.update(scratch.read)
            work.problems.extend(
                PreconditionViolation(
                    # The agent file is the origin: the scratch composition knows none.
                    p.type,
                    f"{label} ({agent.source}): {p.subject.removeprefix(': ')}",
                    p.description,
                )
                for p in scratch.problems
                if (p.type, p.description) not in reported
            )
            work.warnings.extend(
                FieldViolation(f"{label}.{w.field}", w.description)
                for w in scratch.warnings
                if (w.field, w.description) not in warned
            )
            provider = default_provider(composed, {})
            declared = {
                str(entry.get("module") if isinstance(entry, Mapping) else entry)
                for entry in overlay.get("tools") or []
            }
            agents.append(
                dataclasses.replace(
                    agent,
                    modules=tuple(resolved),
                    declared_tools=frozenset(declared),
                    default_provider=provider[0] if provider else "",
                    default_provider_field=provider[1] if provider else "",
                )
            )
        return tuple(agents)

    async def _package_namespace(
        self, source: str, where: str, work: _Composition, time_remaining: float | None
    ) -> str | None:
        """The namespace of the package imported with source_uri source, or None (a problem)."""
        key = canonical_source(source)
        for config in await self._client.find(
            f"source_uri = {json.dumps(key)}", time_remaining, limit=1
        ):
            if canonical_source(config.source_uri) == key and config.namespace:
                return config.namespace
        work.problems.append(
            PreconditionViolation(
                "SKILL_SOURCE_NOT_FOUND",
                where,
                f"no package of this tenant was imported with source_uri {key}",
            )
        )
        return None

    async def _agent_skills(
        self,
        modules: list[ResolvedModule],
        parent_modules: Sequence[ResolvedModule],
        work: _Composition,
        time_remaining: float | None,
    ) -> list[ResolvedModule]:
        """An agent's modules with their skills: a tool-skills entry the agent inherits as
        it is takes the skills the bundle's got; only one it configures itself is looked up."""
        handed = {
            _skills_key(m): m.config
            for m in parent_modules
            if m.kind == "tool" and m.module == SKILLS_MODULE
        }
        reused = [
            dataclasses.replace(m, config=handed[_skills_key(m)])
            if m.kind == "tool" and m.module == SKILLS_MODULE and _skills_key(m) in handed
            else m
            for m in modules
        ]
        if all(
            m.module != SKILLS_MODULE or m.config.get(SKILLS_CONFIG_KEY) is not None
            for m in reused
            if m.kind == "tool"
        ):
            return reused
        found, _ = await self._with_skills(reused, work, time_remaining)
        return found

    async def _parse(
        self, text: str, label: str, work: _Composition, namespace: str = ""
    ) -> _Loaded | None:
        # Parsing a large document takes a while: health checks and turns must not wait.
        result = await self._cpu.run(validate_document, text, self._limits)
        if not result.valid or result.bundle is None:
            for violation in result.errors:
                work.problems.append(
                    PreconditionViolation(
                        "INVALID_BUNDLE",
                        f"{label}: {violation.field or 'document'}",
                        f"{violation.message} (line {violation.line}, column {violation.column})",
                    )
                )
            return None
        return _Loaded(label, result.bundle.data, result.bundle.instruction, namespace)

    async def _load(
        self,
        text: str,
        namespace: str,
        where: str,
        work: _Composition,
        time_remaining: float | None,
    ) -> tuple[_Loaded, str] | None:
        """The included bundle a reference names: a file of the tenant's, or a shipped one."""
        try:
            reference = parse_reference(text, Site.INCLUDE, namespace)
        except UnresolvableReference as exc:
            work.problems.append(PreconditionViolation("INVALID_REFERENCE", where, str(exc)))
            return None
        found = await self._resolver.resolve(reference, Site.INCLUDE, work.lookups, time_remaining)
        if found is None:
            work.problems.append(
                PreconditionViolation(
                    "INCLUDE_NOT_FOUND",
                    where,
                    f"{_shown(text)} names no bundle of this tenant (import its package with "
                    f"ImportBundle) nor one shipped with SessionService ({SHIPPED_NAMESPACE}:…)",
                )
            )
            return None
        if found.config is None:
            loaded = await self._parse(found.text, f"bundle:{found.name}", work, SHIPPED_NAMESPACE)
            return None if loaded is None else (loaded, found.name)
        config = found.config
        work.include(config)
        loaded = await self._parse(
            config.yaml_content, f"config:{config.name}", work, config.namespace
        )
        return None if loaded is None else (loaded, config.name)

    async def _compose(
        self,
        bundle: _Loaded,
        stack: list[str],
        work: _Composition,
        time_remaining: float | None,
    ) -> tuple[dict[str, Any], str]:
        merged: dict[str, Any] = {}
        instruction = ""
        includes = bundle.data.get("includes") or []
        for index, item in enumerate(includes):
            ref = include_ref(item)
            where = f"{bundle.label}: includes[{index}]"
            loaded = await self._load(ref, bundle.namespace, where, work, time_remaining)
            if loaded is None:
                continue
            sub, name = loaded
            if name in stack:
                work.problems.append(
                    PreconditionViolation(
                        "INCLUDE_CYCLE", where, " -> ".join([*stack, name]) + " is a cycle"
                    )
                )
                continue
            sub_merged, sub_instruction = await self._compose(
                sub, [*stack, name], work, time_remaining
            )
            merged = merge_bundles(merged, sub_merged)
            instruction = sub_instruction or instruction
        work.chain.append(bundle.label)
        if bundle.namespace and bundle.namespace != SHIPPED_NAMESPACE:
            # Moved to the end: the outermost bundle of a package decides its place.
            work.namespaces.pop(bundle.namespace, None)
            work.namespaces[bundle.namespace] = None
        depth = len(stack) - 1
        for list_key in MODULE_LISTS:
            for entry in bundle.data.get(list_key) or []:
                if isinstance(entry, Mapping):
                    entry_key = (list_key, module_key(entry))
                    work.origins[entry_key] = bundle.label
                    work.depths[entry_key] = min(depth, work.depths.get(entry_key, depth))
        for part in ("orchestrator", "context"):
            if part in (bundle.data.get("session") or {}):
                work.origins[("session", part)] = bundle.label
        # After what it includes, so the including bundle's agents win and its context
        # comes after theirs.
        await self._agents_and_context(bundle, work, time_remaining)
        # The including bundle comes last and wins; its instruction replaces inherited ones.
        return merge_bundles(merged, bundle.data), bundle.instruction or instruction

    async def _agents_and_context(
        self, bundle: _Loaded, work: _Composition, time_remaining: float | None
    ) -> None:
        """Resolves the agents and context files one bundle names, and its @mentions."""
        occurrences = [
            o
            for o in document_references(bundle.data, bundle.namespace)
            if o.site is not Site.INCLUDE
        ]
        occurrences.extend(find_mentions(bundle.instruction))
        agents = bundle.data.get("agents")
        if isinstance(agents, Mapping):
            for name, definition in agents.items():
                if name != "include" and isinstance(definition, Mapping):
                    work.agents[str(name)] = PreparedAgent(
                        str(name), str(definition.get("description", "")), bundle.label
                    )
        for occurrence in occurrences:
            where = f"{bundle.label}: " + (occurrence.field or f"@mention (line {occurrence.line})")
            if occurrence.reference is None:
                work.problems.append(
                    PreconditionViolation("INVALID_REFERENCE", where, occurrence.problem)
                )
                continue
            found = await self._resolver.resolve(
                occurrence.reference, occurrence.site, work.lookups, time_remaining
            )
            if found is None or found.config is None:
                kind = "AGENT" if occurrence.site is Site.AGENT else "CONTEXT"
                work.problems.append(
                    PreconditionViolation(
                        f"{kind}_NOT_FOUND",
                        where,
                        f"{_shown(occurrence.text)} names no stored "
                        f"{kind.lower()} file of this tenant",
                    )
                )
                continue
            config = found.config
            work.include(config)
            if occurrence.site is Site.AGENT:
                agent = await self._cpu.run(_agent, config, self._limits)
                if agent is None:
                    work.problems.append(
                        PreconditionViolation(
                            "INVALID_AGENT", where, f"{config.name} is not an agent file"
                        )
                    )
                else:
                    work.agents[agent.name] = agent
                continue
            if config.name in work.context:
                continue
            work.context_bytes += len(config.yaml_content.encode())
            if work.context_bytes > MAX_CONTEXT_BYTES:
                work.problems.append(
                    PreconditionViolation(
                        "CONTEXT_TOO_LARGE",
                        where,
                        f"context files add up to more than {MAX_CONTEXT_BYTES} bytes",
                    )
                )
                continue
            origin = (
                f"@mention in {bundle.label}"
                if occurrence.site is Site.MENTION
                else f"context.include of {bundle.label}"
            )
            work.context[config.name] = ContextFile(config.name, origin, config.yaml_content)

    async def _with_skills(
        self, modules: list[ResolvedModule], work: _Composition, time_remaining: float | None
    ) -> tuple[list[ResolvedModule], tuple[PreparedSkill, ...]]:
        """Hands the skills of the packages composed (and those the module's `skills` key
        names) to each tool-skills module, under SKILLS_CONFIG_KEY of its config."""
        wanted = [
            i for i, m in enumerate(modules) if m.kind == "tool" and m.module == SKILLS_MODULE
        ]
        if not wanted:
            return modules, ()
        # (namespace, "" for all its skills or "skills/NAME" for one) -> where it was named.
        sources: dict[tuple[str, str], str] = {(ns, ""): "" for ns in work.namespaces}
        for index in wanted:
            for (namespace, folder), where in _named_skill_sources(modules[index], work).items():
                if namespace.startswith(_GIT_SOURCE):
                    # A package named by its address: the one imported with that source_uri.
                    resolved = await self._package_namespace(namespace, where, work, time_remaining)
                    if resolved is None:
                        continue
                    namespace = resolved
                sources[(namespace, folder)] = where
        found: dict[str, PreparedSkill] = {}
        budget = _SkillBudget()
        for (namespace, folder), where in sources.items():
            for skill in await self._read_skills(namespace, folder, where, work, time_remaining):
                # A folder reached twice (its package, then by name) counts once.
                if not budget.take(skill, work):
                    break
                # A later source (the outer package, then the module's own list) wins a name.
                found[skill.name] = skill
        skills = tuple(found[name] for name in sorted(found))
        handed = [{**dataclasses.asdict(s), "files": dict(s.files)} for s in skills]
        for index in wanted:
            module = modules[index]
            config = module.config if isinstance(module.config, Mapping) else {}
            if SKILLS_CONFIG_KEY in config:
                work.problems.append(
                    PreconditionViolation(
                        "RESERVED_CONFIG_KEY",
                        f"{module.field}.config.{SKILLS_CONFIG_KEY}",
                        "is reserved: preparation fills it with the skills of the packages "
                        "composed; list extra ones under `skills`",
                    )
                )
            # A new mapping: the composed document keeps the bundle's own settings.
            modules[index] = dataclasses.replace(
                module, config={**config, SKILLS_CONFIG_KEY: handed}
            )
        return modules, skills

    async def _read_skills(
        self,
        namespace: str,
        folder: str,
        where: str,
        work: _Composition,
        time_remaining: float | None,
    ) -> list[PreparedSkill]:
        """The skills stored under `NS:skills/` (or the one folder named), by folder."""
        pattern = f"{folder or SKILLS_FOLDER}/*"
        if folder:
            # Named on purpose: creating it later must invalidate what is prepared now.
            work.lookups.asked.add(f"{namespace}:{folder}/SKILL.md")
        try:
            configs = await self._client.find(
                f"namespace = {json.dumps(namespace)} AND path = {json.dumps(pattern)}",
                time_remaining,
                limit=MAX_SKILL_FILES,
            )
        except Unavailable as exc:
            # Larger than a message may be: the package's doing, not an outage to retry.
            if exc.metadata.get("upstream_code") != "RESOURCE_EXHAUSTED":
                raise
            work.problems.append(
                PreconditionViolation(
                    "SKILLS_TOO_LARGE",
                    where or f"{namespace}:{pattern}",
                    "the skill files are larger than one ConfigService reply may be",
                )
            )
            return []
        if len(configs) >= MAX_SKILL_FILES:
            work.warnings.append(
                FieldViolation(
                    where or f"{namespace}:{pattern}",
                    f"more than {MAX_SKILL_FILES - 1} skill files; only some were read",
                )
            )
        folders: dict[str, dict[str, FetchedConfig]] = {}
        for config in configs:
            parts = config.path.split("/")
            if len(parts) >= 3 and parts[0] == SKILLS_FOLDER:
                folders.setdefault("/".join(parts[:2]), {})["/".join(parts[2:])] = config
        if folder and "SKILL.md" not in folders.get(folder, {}):
            work.problems.append(
                PreconditionViolation(
                    "SKILL_NOT_FOUND",
                    where,
                    f"{namespace}:{folder} has no SKILL.md stored in this tenant",
                )
            )
            return []
        skills: list[PreparedSkill] = []
        for name in sorted(folders):
            files = folders[name]
            document = files.pop("SKILL.md", None)
            if document is None:
                continue
            for config in (document, *files.values()):
                # Like a context file: an edit to any of them invalidates the prepared bundle.
                work.lookups.asked.add(config.name)
                work.include(config)
            read = await self._cpu.run(_read_skill, document.yaml_content, self._limits)
            if isinstance(read, FieldViolation):
                work.warnings.append(
                    FieldViolation(
                        document.name,
                        f"skill skipped: {read.description}",
                        read.line,
                        read.column,
                    )
                )
                continue
            meta, body = read
            skills.append(
                PreparedSkill(
                    name=meta.get("name") or name.rsplit("/", 1)[-1],
                    description=meta["description"],
                    namespace=namespace,
                    folder=name,
                    body=body,
                    files={path: files[path].yaml_content for path in sorted(files)},
                    version=meta.get("version", ""),
                    license=meta.get("license", ""),
                )
            )
        return skills

    def _expand(
        self, tenant_id: str, value: Any, path: str, work: _Composition, key: str = ""
    ) -> Any:
        """A copy of value with `${VAR}` references replaced as the operator allows."""
        if isinstance(value, Mapping):
            return {
                k: self._expand(tenant_id, v, f"{path}.{k}" if path else str(k), work, str(k))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [
                self._expand(tenant_id, v, f"{path}[{i}]", work, key) for i, v in enumerate(value)
            ]
        if not isinstance(value, str) or "${" not in value:
            return value
        # A credential setting hands its value to the module as a credential, nothing else.
        credential = is_secret_key(key)

        def resolve(reference: EnvReference) -> str:
            found = self._environment.resolve(tenant_id, reference, credential)
            if found.problem:
                work.problems.append(PreconditionViolation(found.problem, path, found.message))
            return found.value

        return substitute(value, resolve)

    def _resolve(self, document: Mapping[str, Any], work: _Composition) -> list[ResolvedModule]:
        modules: list[ResolvedModule] = []

        def resolve(kind: str, entry: Any, where: str, origin: str) -> None:
            if isinstance(entry, str):
                entry = {"module": entry}
            name = str(entry.get("module", ""))
            source = str(entry.get("source", "") or "")
            implementation = self._registry.resolve(kind, name)
            if implementation is None:
                names = self._registry.names(kind)
                # The nearest names first: a long list is cut short in the error's details.
                close = difflib.get_close_matches(name, names, n=2)
                hint = f"did you mean {' or '.join(close)}? " if close else ""
                work.problems.append(
                    PreconditionViolation(
                        "MODULE_NOT_INSTALLED",
                        f"{origin}: {where}",
                        f"{kind} module {name!r}"
                        + (f" (source {source})" if source else "")
                        + f" is not installed; {hint}installed {kind} modules: "
                        + (", ".join(names) or "none"),
                    )
                )
                return
            config = entry.get("config") or {}
            unresolved = any(p.subject.startswith(f"{where}.config") for p in work.problems)
            # A setting whose reference did not resolve is reported once, as that.
            if self._reach is not None and not unresolved:
                for problem in self._reach.check(self._registry, kind, implementation, config):
                    violation, key, message = problem
                    work.problems.append(
                        PreconditionViolation(violation, f"{where}.config.{key}", message)
                    )
            known = self._registry.config_keys(implementation)
            if known is not None and isinstance(config, Mapping):
                for key in config:
                    if key not in known:
                        # Amplifier's module of this name may read it; this one does not.
                        work.warnings.append(
                            FieldViolation(
                                f"{where}.config.{key}",
                                f"{name} does not read {str(key)!r}; it has no effect "
                                f"(it reads: {', '.join(sorted(known)) or 'nothing'})",
                            )
                        )
            notice = self._registry.notice(implementation)
            if notice:
                work.warnings.append(FieldViolation(where, f"{name}: {notice}"))
            modules.append(ResolvedModule(kind, name, source, where, implementation, config))

        session = document.get("session") or {}
        for part, default in (("orchestrator", DEFAULT_ORCHESTRATOR), ("context", DEFAULT_CONTEXT)):
            entry = session.get(part) or default
            if isinstance(entry, Mapping) and not entry.get("module"):
                # A behavior may tune the loop's config without naming it (`{config: …}`).
                entry = {**entry, "module": default}
            origin = work.origins.get(("session", part), "default")
            resolve(part, entry, f"session.{part}", origin)
        for list_key in MODULE_LISTS:
            for index, entry in enumerate(document.get(list_key) or []):
                origin = work.origins.get((list_key, module_key(entry)), "")
                resolve(_KIND_OF_LIST[list_key], entry, f"{list_key}[{index}]", origin)
        return modules


def _shown(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:117] + "...")


@dataclass
class _SkillBudget:
    """MAX_SKILLS and MAX_SKILL_BYTES over every skill read; the first overrun is reported."""

    seen: set[tuple[str, str]] = field(default_factory=set)
    size: int = 0
    exceeded: bool = False

    def take(self, skill: PreparedSkill, work: _Composition) -> bool:
        if self.exceeded:
            return False
        if (skill.namespace, skill.folder) in self.seen:
            return True
        self.seen.add((skill.namespace, skill.folder))
        self.size += sum(len(t.encode()) for t in (skill.body, *skill.files.values()))
        where = f"{skill.namespace}:{skill.folder}"
        if len(self.seen) > MAX_SKILLS:
            problem = ("TOO_MANY_SKILLS", f"more than {MAX_SKILLS} skills")
        elif self.size > MAX_SKILL_BYTES:
            problem = (
                "SKILLS_TOO_LARGE",
                f"skill files add up to more than {MAX_SKILL_BYTES} bytes",
            )
        else:
            return True
        self.exceeded = True
        work.problems.append(PreconditionViolation(problem[0], where, problem[1]))
        return False


def _named_skill_sources(module: ResolvedModule, work: _Composition) -> dict[tuple[str, str], str]:
    """The namespaces (`NS`) and skills (`NS:skills/NAME`) a tool-skills `skills` key adds."""
    config = module.config if isinstance(module.config, Mapping) else {}
    value = config.get("skills")
    if value is None:
        return {}
    expected = (
        "a package namespace (NS), one of its skills (NS:skills/NAME), or a package address "
        "(git+https://HOST/ORG/REPO@REF#subdirectory=skills)"
    )
    if not isinstance(value, list):
        work.problems.append(
            PreconditionViolation(
                "INVALID_SKILL_REFERENCE", f"{module.field}.config.skills", f"must list {expected}s"
            )
        )
        return {}
    sources: dict[tuple[str, str], str] = {}
    for index, item in enumerate(value):
        where = f"{module.field}.config.skills[{index}]"
        if isinstance(item, str) and item.startswith(_GIT_SOURCE):
            try:
                reference = parse_reference(item)
            except UnresolvableReference as exc:
                work.problems.append(
                    PreconditionViolation("INVALID_SKILL_REFERENCE", where, str(exc))
                )
                continue
            folder = reference.subdirectory
            segments = folder.split("/") if folder else []
            if segments and (segments[0] != SKILLS_FOLDER or len(segments) > 2):
                work.problems.append(
                    PreconditionViolation(
                        "INVALID_SKILL_REFERENCE",
                        where,
                        "#subdirectory= must be skills or skills/NAME of the package",
                    )
                )
                continue
            # Resolved to the package's namespace by the caller; "skills" means all of them.
            sources[(reference.source_uri, folder if len(segments) == 2 else "")] = where
            continue
        namespace, colon, path = item.partition(":") if isinstance(item, str) else ("", "", "")
        segments = path.split("/")
        if not is_valid_namespace(namespace) or (
            colon
            and not (len(segments) == 2 and segments[0] == SKILLS_FOLDER and is_valid_path(path))
        ):
            work.problems.append(
                PreconditionViolation("INVALID_SKILL_REFERENCE", where, f"must be {expected}")
            )
            continue
        sources[(namespace, path)] = where
    return sources


_SKILL_NAME_LIMIT = 128


def _read_skill(text: str, limits: Limits) -> tuple[dict[str, str], str] | FieldViolation:
    """A SKILL.md's frontmatter (name, description, version, license) and body, or why not."""
    parts = split_parts(text)
    if not parts.has_frontmatter:
        return FieldViolation("", "a SKILL.md starts with YAML frontmatter between --- lines", 1, 1)
    # The tenant's text: loaded as plain data within the same caps as a bundle.
    loaded, violations = load_yaml(parts.yaml, limits, parts.line_offset)
    errors = [v for v in violations if v.severity is Severity.ERROR]
    if loaded is None or errors:
        first = (errors or violations)[0] if (errors or violations) else None
        if first is None:
            return FieldViolation("", "its frontmatter cannot be read", 1, 1)
        return FieldViolation(
            "",
            f"{first.message} (line {first.line}, column {first.column})",
            first.line,
            first.column,
        )
    root = loaded.root
    if not isinstance(root, dict):
        return FieldViolation("", "its frontmatter must be a mapping", 2, 1)
    description = root.get("description")
    if not isinstance(description, str) or not description.strip():
        line, column = loaded.locations.key(("description",))
        return FieldViolation("", "`description` must be a non-empty string", line, column)
    name = root.get("name", "")
    if name and (
        not isinstance(name, str)
        or len(name) > _SKILL_NAME_LIMIT
        or not name.isprintable()
        or name.strip() != name
    ):
        line, column = loaded.locations.value(("name",))
        return FieldViolation(
            "",
            f"`name` must be printable text of at most {_SKILL_NAME_LIMIT} characters",
            line,
            column,
        )
    meta = {"name": str(name or ""), "description": description.strip()}
    for key in ("version", "license"):
        value = root.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            meta[key] = str(value)
    return meta, (parts.body or "").strip()


def _skills_key(module: ResolvedModule) -> str:
    """What makes two tool-skills entries hand over the same skills: their `skills` key."""
    return json.dumps(module.config.get("skills"), sort_keys=True, default=str)


def _agent(config: FetchedConfig, limits: Limits) -> PreparedAgent | None:
    """An agent file's name, description and instruction (its `meta:` frontmatter)."""
    result = validate_agent(config.yaml_content, limits)
    if not result.valid or result.bundle is None:
        return None
    meta = result.bundle.data.get("meta")
    if not isinstance(meta, Mapping):
        return None
    name = str(meta.get("name") or config.name.rsplit("/", 1)[-1])
    overlay = {key: value for key, value in result.bundle.data.items() if key in AGENT_OVERLAY_KEYS}
    return PreparedAgent(
        name,
        str(meta.get("description") or ""),
        config.name,
        result.bundle.instruction,
        overlay=overlay,
    )


def _priority(entry: Any) -> float:
    config = entry.get("config") if isinstance(entry, Mapping) else None
    value = config.get("priority") if isinstance(config, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float("inf")


def default_provider(
    document: Mapping[str, Any], depths: Mapping[tuple[str, str], int]
) -> tuple[str, str] | None:
    """(module, field) of the provider turns use, or None when there is none.

    The lowest `config.priority` wins; among equals (or none), the one declared by the outer
    bundle comes before one it included, then document order.
    """
    best: tuple[float, int, int] | None = None
    chosen: tuple[str, str] | None = None
    for index, entry in enumerate(document.get("providers") or []):
        if isinstance(entry, str):
            entry = {"module": entry}
        if not isinstance(entry, Mapping):
            continue
        rank = (_priority(entry), depths.get(("providers", module_key(entry)), 0), index)
        if best is None or rank < best:
            best, chosen = rank, (str(entry.get("module", "")), f"providers[{index}]")
    return chosen


def _failure(fetched: FetchedConfig, problems: list[PreconditionViolation]) -> FailedPrecondition:
    kinds = {p.type for p in problems}
    reason = kinds.pop() if len(kinds) == 1 else "PREPARATION_FAILED"
    summary = "; ".join(f"{p.subject}: {p.description}" for p in problems[:5])
    return PreparationFailed(
        f"Config {fetched.name!r} revision {fetched.revision} cannot be prepared "
        f"({len(problems)} problem(s)): {summary}",
        reason=reason,
        metadata={"config_id": fetched.config_id, "revision": str(fetched.revision)},
        violations=problems,
    )

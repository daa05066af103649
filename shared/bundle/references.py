"""References between stored bundle files: their forms, where a document makes them, and the
stored names they may resolve to. Pure functions, no I/O.

ConfigService uses this module to warn about references that resolve to nothing in a tenant;
SessionService uses the same functions to resolve them when it prepares a bundle, so both
agree on what a reference means.

The forms (DESIGN §3 "Bundle packages"):

- `NS`: the root bundle of package NS, or a config created on its own with that name.
- `NS:PATH`: the file PATH of package NS. Bundle and agent files are stored without their
  extension (`acme:behaviors/review`, `acme:agents/reviewer`), other files with it
  (`acme:context/style.md`); a reference may still spell a bundle file's extension.
- `git+https://HOST/ORG/REPO@REF#subdirectory=PATH`: the file or folder PATH of the package
  imported with that `source_uri`; without `#subdirectory`, that package's root bundle.
  `@REF` is recorded, never matched: source URIs compare by `canonical_source`.
- `agents: include: [NS:NAME]` names `NS:agents/NAME`; a bare `NAME` names an agent of the
  document's own package.
- `context: include: [NS:PATH]`, and `@NS:PATH` mentions in a markdown body, name a stored
  file; a bare `PATH` in `context.include` names one of the document's own package.

An include may carry a leading `@` (`"@acme:behaviors/review"`), as some Amplifier guides
write it. Names in the `tandem` namespace are the bundles shipped with SessionService.

Typical use::

    for found in document_references(data, namespace="acme", locate=locations.value):
        if found.reference is None:
            warn(found.field, found.problem)
        elif found.reference.is_source:
            paths = candidate_paths(found.reference)  # match with canonical_source(...)
        else:
            names = candidate_names(found.reference, found.site)  # the first stored one wins
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from shared.bundle.document import split_parts
from shared.bundle.paths import Path, format_path

__all__ = [
    "MAX_NAME_LENGTH",
    "ROOT_BUNDLE_PATHS",
    "SHIPPED_NAMESPACE",
    "Occurrence",
    "Reference",
    "Site",
    "UnresolvableReference",
    "body_mentions",
    "candidate_names",
    "candidate_paths",
    "canonical_source",
    "document_references",
    "find_mentions",
    "is_valid_name",
    "is_valid_namespace",
    "is_valid_path",
    "parse_reference",
    "split_name",
    "stored_name",
]

# Bundles shipped with SessionService live here, so they never shadow a user's package.
SHIPPED_NAMESPACE = "tandem"
# A package's root bundle, in the order one is looked for.
ROOT_BUNDLE_PATHS = ("bundle.md", "bundle.yaml")
# The extensions of bundle and agent files, which their stored names leave out.
DOCUMENT_EXTENSIONS = (".yaml", ".yml", ".md")
MAX_NAME_LENGTH = 256
MAX_NAMESPACE_LENGTH = 128
MAX_SEGMENT_LENGTH = 128

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SEGMENT = re.compile(r"[A-Za-z0-9._+-]{1,128}")
_GIT = re.compile(r"(?i)(?P<scheme>git\+https)://(?P<host>[^/?#]+)(?P<rest>/[^#]*)?")


class Site(Enum):
    """Where in a document a reference is made, which decides what it may name."""

    INCLUDE = "include"  # includes[i] or includes[i].bundle
    AGENT = "agent"  # agents.include[i]
    CONTEXT = "context"  # context.include[i]
    MENTION = "mention"  # @NS:PATH in a markdown body


class UnresolvableReference(ValueError):
    """A string where a reference belongs that has none of the forms Tandem resolves."""


@dataclass(frozen=True)
class Reference:
    """A parsed reference: by name (`namespace`, `path`) or by package source.

    By name, `path` is "" for a bare `NS`. By source, `source_uri` is the URI as written
    without its fragment (`@REF` included) and `subdirectory` the `#subdirectory=` value.
    `bare` marks an agent or context name written without a namespace, which was resolved
    against the document's own package.
    """

    namespace: str = ""
    path: str = ""
    source_uri: str = ""
    subdirectory: str = ""
    bare: bool = False

    @property
    def is_source(self) -> bool:
        """True for a `git+https://` reference."""
        return bool(self.source_uri)

    @property
    def source_key(self) -> str:
        """The source URI as imports are matched by (see `canonical_source`)."""
        return canonical_source(self.source_uri) if self.source_uri else ""

    @property
    def git_ref(self) -> str:
        """The `@REF` of a source reference ("" when none); recorded, never matched."""
        found = _GIT.fullmatch(self.source_uri)
        rest = (found.group("rest") or "") if found else ""
        at = rest.rfind("@")
        return rest[at + 1 :] if at != -1 else ""

    @property
    def shipped(self) -> bool:
        """True for a name in the namespace of the bundles SessionService ships."""
        return not self.is_source and self.namespace == SHIPPED_NAMESPACE


@dataclass(frozen=True)
class Occurrence:
    """One reference made by a document, where it is made, and what it says.

    `path` locates a YAML value (`("includes", 0, "bundle")`); a mention has `()` and its
    line and column in the document. `reference` is None when the text has no form Tandem
    resolves, and `problem` then says why.
    """

    site: Site
    text: str
    path: Path
    reference: Reference | None
    problem: str = ""
    line: int = 0
    column: int = 0

    @property
    def field(self) -> str:
        """The YAML path as violations spell it (`includes[0].bundle`); "" for a mention."""
        return format_path(self.path)


# Names ------------------------------------------------------------------------------------


def is_valid_namespace(text: str) -> bool:
    """True for a namespace (and a plain config name): 1-128 of letters, digits, `.`, `_`,
    `-`, starting with a letter or digit."""
    return _NAMESPACE.fullmatch(text) is not None


def is_valid_path(path: str) -> bool:
    """True for a relative package path: `/`-separated segments of letters, digits, `.`,
    `_`, `+`, `-`; no empty, `.` or `..` segment, no leading or trailing `/`."""
    if not path or len(path) > MAX_NAME_LENGTH:
        return False
    return all(
        _SEGMENT.fullmatch(segment) is not None and segment not in (".", "..")
        for segment in path.split("/")
    )


def is_valid_name(name: str) -> bool:
    """True for a config name: `NS`, or `NS:PATH` (one `:`), at most 256 characters."""
    if len(name) > MAX_NAME_LENGTH:
        return False
    namespace, _, path = name.partition(":")
    if not is_valid_namespace(namespace):
        return False
    return ":" not in name or is_valid_path(path)


def split_name(name: str) -> tuple[str, str]:
    """`acme:context/style.md` → `("acme", "context/style.md")`; `acme` → `("acme", "")`."""
    namespace, _, path = name.partition(":")
    return namespace, path


def _strip_document_extension(path: str) -> str:
    for extension in DOCUMENT_EXTENSIONS:
        if path.endswith(extension) and len(path) > len(extension):
            return path[: -len(extension)]
    return path


def stored_name(namespace: str, path: str, *, document: bool) -> str:
    """The config name of package file `path`: `NS` for the root bundle, `NS:DIR/FILE` for
    other bundle and agent files (`document`, extension dropped), `NS:PATH` for the rest."""
    if document and path in ROOT_BUNDLE_PATHS:
        return namespace
    return f"{namespace}:{_strip_document_extension(path) if document else path}"


# Parsing ----------------------------------------------------------------------------------


def parse_reference(text: str, site: Site = Site.INCLUDE, namespace: str = "") -> Reference:
    """Parses one reference written at `site` by a document of package `namespace` ("" for
    a config created on its own). Raises UnresolvableReference with the reason."""
    value = text.strip()
    if site is Site.INCLUDE and value.startswith("@"):
        value = value[1:]
    if not value:
        raise UnresolvableReference("an empty reference names nothing")
    if value.lower().startswith("git+https://"):
        return _parse_source(value)
    if "://" in value or value.startswith(("./", "../", "/", "~")):
        raise UnresolvableReference(
            "is not a reference Tandem resolves: use NS, NS:PATH or "
            "git+https://HOST/ORG/REPO@REF#subdirectory=PATH of an imported package"
        )
    if ":" in value:
        ref_namespace, _, path = value.partition(":")
        if not is_valid_namespace(ref_namespace):
            raise UnresolvableReference(f"{_shown(ref_namespace)} is not a valid namespace")
        if not is_valid_path(path):
            raise UnresolvableReference(f"{_shown(path)} is not a valid path in a package")
        return Reference(ref_namespace, path)
    if site is Site.INCLUDE:
        if not is_valid_namespace(value):
            raise UnresolvableReference(f"{_shown(value)} is not a valid bundle name")
        return Reference(value)
    # A bare agent or context name belongs to the document's own package.
    if not namespace:
        raise UnresolvableReference(
            "names no namespace, and the document belongs to no package: write NS:"
            + ("NAME" if site is Site.AGENT else "PATH")
        )
    if not is_valid_path(value):
        raise UnresolvableReference(f"{_shown(value)} is not a valid path in a package")
    return Reference(namespace, value, bare=True)


def _parse_source(value: str) -> Reference:
    uri, _, fragment = value.partition("#")
    if _GIT.fullmatch(uri) is None:
        raise UnresolvableReference("is not a git+https://HOST/ORG/REPO@REF address")
    subdirectory = ""
    for part in fragment.split("&") if fragment else ():
        key, _, item = part.partition("=")
        if key == "subdirectory":
            subdirectory = item.strip("/")
    if subdirectory and not is_valid_path(subdirectory):
        raise UnresolvableReference(
            f"subdirectory {_shown(subdirectory)} is not a valid path in a package"
        )
    return Reference(source_uri=uri, subdirectory=subdirectory)


def canonical_source(uri: str) -> str:
    """A source URI as imports and `git+https` references are matched: without its
    fragment, `@REF` and user info, scheme and host lower-cased, no trailing `/` or `.git`.

    `git+https://GitHub.com/acme/kit.git@v2` and `git+https://github.com/acme/kit@main`
    both give `git+https://github.com/acme/kit`. Any other URI is only trimmed.
    """
    text = uri.strip().partition("#")[0]
    found = _GIT.fullmatch(text)
    if found is None:
        return text.rstrip("/")
    host = found.group("host").rpartition("@")[2].lower()
    rest = found.group("rest") or ""
    at = rest.rfind("@")
    if at != -1:
        rest = rest[:at]
    rest = rest.rstrip("/")
    rest = rest.removesuffix(".git")
    return f"git+https://{host}{rest}"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


# Resolution candidates --------------------------------------------------------------------


def candidate_names(reference: Reference, site: Site) -> tuple[str, ...]:
    """Config names a name reference may resolve to, best first (empty for a source
    reference). The first one stored in the tenant is what it names.

    `acme:reviewer` as an agent → `acme:agents/reviewer`, `acme:reviewer`;
    `acme:behaviors/review.yaml` → itself, then `acme:behaviors/review`;
    `acme:context/style` as context → itself, then `acme:context/style.md`.
    """
    if reference.is_source:
        return ()
    namespace, path = reference.namespace, reference.path
    if not path:
        return (namespace,)
    extensionless = "." not in path.rsplit("/", 1)[-1]
    paths: list[str] = []
    if site is Site.AGENT and not path.startswith("agents/"):
        paths.append(f"agents/{_strip_document_extension(path)}")
    if site is Site.CONTEXT and reference.bare and not path.startswith("context/"):
        # Own-package names: the file under context/ first, as Amplifier lays them out.
        paths.extend((f"context/{path}.md",) if extensionless else ())
        paths.append(f"context/{path}")
    paths.append(path)
    stem = _strip_document_extension(path)
    if stem != path:
        paths.append(stem)
    elif site in (Site.CONTEXT, Site.MENTION) and extensionless:
        paths.append(f"{path}.md")
    return tuple(dict.fromkeys(f"{namespace}:{item}" for item in paths))


def candidate_paths(reference: Reference) -> tuple[str, ...]:
    """Package paths a source reference may resolve to, best first (empty for a name
    reference): the root bundle without `#subdirectory`; else the file itself, a bundle of
    that name, or the root bundle of that folder.

    Look each up among the configs whose canonical source is `reference.source_key`
    (ListConfigs: `source_uri = "…" AND path = "…"`).
    """
    if not reference.is_source:
        return ()
    sub = reference.subdirectory
    if not sub:
        return ROOT_BUNDLE_PATHS
    paths = [sub]
    if _strip_document_extension(sub) == sub:
        paths.extend(f"{sub}{extension}" for extension in DOCUMENT_EXTENSIONS)
    paths.extend(f"{sub}/{root}" for root in ROOT_BUNDLE_PATHS)
    return tuple(paths)


# Where documents make references ----------------------------------------------------------


def document_references(
    data: Mapping[Any, Any],
    namespace: str = "",
    locate: Callable[[Path], tuple[int, int]] | None = None,
) -> list[Occurrence]:
    """Every reference a parsed bundle or agent document makes in its YAML: `includes`,
    `agents.include` (or an `agents` list) and `context.include`, in document order.

    `namespace` is the document's package ("" for none); `locate` (for example
    `Locations.value`) fills in line and column. Values that are not strings are skipped:
    schema validation reports them.
    """
    found: list[Occurrence] = []

    def add(site: Site, text: Any, path: Path) -> None:
        if not isinstance(text, str):
            return
        line, column = locate(path) if locate is not None else (0, 0)
        try:
            reference: Reference | None = parse_reference(text, site, namespace)
            problem = ""
        except UnresolvableReference as exc:
            reference, problem = None, str(exc)
        found.append(Occurrence(site, text, path, reference, problem, line, column))

    includes = data.get("includes")
    if isinstance(includes, list):
        for index, item in enumerate(includes):
            if isinstance(item, Mapping):
                add(Site.INCLUDE, item.get("bundle"), ("includes", index, "bundle"))
            else:
                add(Site.INCLUDE, item, ("includes", index))
    agents = data.get("agents")
    if isinstance(agents, Mapping) and isinstance(agents.get("include"), list):
        for index, item in enumerate(agents["include"]):
            add(Site.AGENT, item, ("agents", "include", index))
    elif isinstance(agents, list):
        for index, item in enumerate(agents):
            add(Site.AGENT, item, ("agents", index))
    context = data.get("context")
    if isinstance(context, Mapping) and isinstance(context.get("include"), list):
        for index, item in enumerate(context["include"]):
            add(Site.CONTEXT, item, ("context", "include", index))
    return found


# `@` must not follow a word character or an address: `me@acme:x` is no mention.
_MENTION = re.compile(
    r"(?<![\w@./:+-])@(?P<namespace>[A-Za-z0-9][A-Za-z0-9._-]{0,127})"
    r":(?P<path>[A-Za-z0-9._+/-]+)"
)
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# Sentence punctuation after a mention is not part of its path.
_TRAILING = ".,;:!?"


def find_mentions(markdown: str, first_line: int = 1) -> list[Occurrence]:
    """Every `@NS:PATH` mention in markdown, with its line (counted from `first_line`) and
    column; mentions inside code (fenced blocks, inline spans) are not mentions."""
    found: list[Occurrence] = []
    fence: str | None = None
    for index, line in enumerate(markdown.split("\n")):
        opening = _FENCE.match(line)
        if fence is not None:
            if opening is not None and opening.group(1) == fence:
                fence = None
            continue
        if opening is not None:
            fence = opening.group(1)
            continue
        visible = _INLINE_CODE.sub(lambda m: " " * len(m.group()), line)
        for match in _MENTION.finditer(visible):
            path = match.group("path").rstrip(_TRAILING)
            if not is_valid_path(path):
                continue
            text = f"@{match.group('namespace')}:{path}"
            reference = Reference(match.group("namespace"), path)
            found.append(
                Occurrence(
                    Site.MENTION, text, (), reference, "", first_line + index, match.start() + 1
                )
            )
    return found


def body_mentions(document: str) -> list[Occurrence]:
    """The `@NS:PATH` mentions in a document's markdown body (none in pure YAML), located
    in the whole document."""
    parts = split_parts(document)
    if parts.body is None:
        return []
    first_line = (parts.opening + parts.yaml + parts.closing).count("\n") + 1
    return find_mentions(parts.body, first_line)

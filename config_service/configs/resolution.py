"""Which references of a document resolve to nothing in a tenant, as located warnings.

A reference to nothing is a WARNING, never an error: the package it names may be imported
later. Names in the `tandem` namespace (shipped with SessionService) are never looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from config_service.configs.ports import ConfigRepo
from shared.bundle.model import Severity, Violation
from shared.bundle.paths import Path
from shared.bundle.references import (
    Occurrence,
    body_mentions,
    candidate_names,
    candidate_paths,
    document_references,
)

# Where an occurrence is reported: the field prefix ("" for a single document, the file's
# path inside a package) and the occurrence.
Located = tuple[str, Occurrence]


def _field(prefix: str, field: str) -> str:
    if not prefix:
        return field
    return f"{prefix}: {field}" if field else prefix


def _shown(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:117] + "...")


def occurrences(
    data: Mapping[str, Any],
    text: str,
    namespace: str,
    locate: Callable[[Path], tuple[int, int]] | None,
) -> list[Occurrence]:
    """Every reference a parsed document makes: YAML sites, then body mentions."""
    return [*document_references(data, namespace, locate), *body_mentions(text)]


async def unresolved(
    configs: ConfigRepo,
    tenant_id: str,
    found: Sequence[Located],
    *,
    local_names: Collection[str] = frozenset(),
    local_sources: Collection[tuple[str, str]] = frozenset(),
    outside_namespace: str = "",
) -> list[Violation]:
    """A located WARNING for each reference that resolves to nothing.

    A reference resolves when one of its candidate names is a live config of the tenant (or
    in `local_names`), or, for a `git+https` reference, one of its candidate paths is a live
    file of a package imported from that source (or in `local_sources`, as (source key,
    path)). `outside_namespace` leaves that package's stored files out of the lookup: an
    import replaces them with `local_names`.
    """
    names: set[str] = set()
    sources: set[tuple[str, str]] = set()
    for _, occurrence in found:
        reference = occurrence.reference
        if reference is None or reference.shipped:
            continue
        if reference.is_source:
            sources.update((reference.source_key, p) for p in candidate_paths(reference))
        else:
            names.update(candidate_names(reference, occurrence.site))
    names.difference_update(local_names)
    sources.difference_update(local_sources)
    stored_names = (
        await configs.existing_names(tenant_id, sorted(names), outside_namespace=outside_namespace)
        if names
        else set()
    )
    stored_sources = (
        await configs.existing_source_paths(
            tenant_id, sorted(sources), outside_namespace=outside_namespace
        )
        if sources
        else set()
    )
    known_names = stored_names | set(local_names)
    known_sources = stored_sources | set(local_sources)

    warnings: list[Violation] = []
    for prefix, occurrence in found:
        reference = occurrence.reference
        field = _field(prefix, occurrence.field)
        where = (occurrence.line, occurrence.column)
        if reference is None:
            message = f"{_shown(occurrence.text)} {occurrence.problem}"
        elif reference.shipped:
            continue
        elif reference.is_source:
            paths = candidate_paths(reference)
            if any((reference.source_key, p) in known_sources for p in paths):
                continue
            message = (
                f"{_shown(occurrence.text)} resolves to nothing in this tenant: no package "
                f"imported from {_shown(reference.source_key)} has {_shown(paths[0])}; "
                "import it with that source_uri"
            )
        else:
            candidates = candidate_names(reference, occurrence.site)
            if any(name in known_names for name in candidates):
                continue
            message = (
                f"{_shown(occurrence.text)} resolves to nothing in this tenant: no config "
                f"named {_shown(candidates[0])}; import the package that provides it"
            )
        warnings.append(Violation(field, *where, message, Severity.WARNING))
    return warnings

"""Domain values of ConfigService. No storage or wire types here."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from shared.bundle.references import MAX_NAME_LENGTH, is_valid_name
from shared.bundle.validate import BundleSummary, Violation
from shared.errors import FieldViolation, InvalidArgument
from shared.identifiers import check_id, tag_violations
from shared.visibility import Visibility


class ConfigKind(Enum):
    """What a stored document is; it decides how the document is validated."""

    BUNDLE = "BUNDLE"
    AGENT = "AGENT"
    CONTEXT = "CONTEXT"


class ChangeType(Enum):
    """What happened to a config, as the change stream reports it."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


@dataclass(frozen=True)
class Config:
    """A config at one revision."""

    config_id: str
    name: str
    description: str
    yaml_content: str
    tags: Mapping[str, str]
    revision: int
    etag: str
    create_time: datetime
    update_time: datetime
    summary: BundleSummary
    delete_time: datetime | None = None
    kind: ConfigKind = ConfigKind.BUNDLE
    # The package it was imported from ("" when created on its own), its path there, and
    # where the package came from as the importer said.
    namespace: str = ""
    path: str = ""
    source_uri: str = ""
    # Findings of the write that made this revision; never stored.
    warnings: tuple[Violation, ...] = ()
    # Who created it (the caller's subject) and their team then, and who else sees it.
    owner: str = ""
    visibility: Visibility = Visibility.ORG
    team: str = ""


@dataclass(frozen=True)
class ConfigChange:
    """One entry of the change stream."""

    sequence: int
    type: ChangeType
    config_id: str
    revision: int
    etag: str
    name: str
    change_time: datetime


@dataclass(frozen=True)
class ConfigFields:
    """The client-settable fields of a config; None means "not given"."""

    name: str | None = None
    description: str | None = None
    yaml_content: str | None = None
    tags: Mapping[str, str] | None = field(default=None)
    visibility: Visibility | None = None


@dataclass(frozen=True)
class Watcher:
    """Who opens a watch of the change stream: the caller's tenant, and whether it is a
    service identity rather than a tenant's user."""

    tenant_id: str
    service: bool = False

    @property
    def scope(self) -> str | None:
        """Whose changes it may follow: a service identity (SessionService invalidating its
        caches) every tenant's (None), any other caller only its own tenant's."""
        return None if self.service else self.tenant_id


UPDATABLE_PATHS = ("name", "description", "yaml_content", "tags", "visibility")
OUTPUT_ONLY_PATHS = (
    "config_id",
    "revision",
    "etag",
    "create_time",
    "update_time",
    "summary",
    "kind",
    "namespace",
    "path",
    "source_uri",
    "warnings",
    "owner",
    "team",
)

MAX_DESCRIPTION = 2048


def make_etag(tenant_id: str, config_id: str, revision: int, content: str) -> str:
    """An opaque etag that changes with every revision."""
    digest = hashlib.sha256(
        f"{tenant_id}\x1f{config_id}\x1f{revision}\x1f{content}".encode()
    ).hexdigest()
    return digest[:20]


def check_config_id(config_id: str, field_path: str = "config_id") -> None:
    """Refuses ids that are not short, URL-safe identifiers."""
    check_id(config_id, field_path, "INVALID_CONFIG_ID")


def check_fields(fields: ConfigFields, prefix: str = "config.") -> None:
    """Refuses names, descriptions and tags outside their limits, naming every bad field."""
    violations: list[FieldViolation] = []
    if fields.name is not None and not is_valid_name(fields.name):
        violations.append(
            FieldViolation(
                prefix + "name",
                "must be NS or NS:PATH: NS is 1-128 characters of letters, digits, '.', '_' "
                "or '-', starting with a letter or digit; PATH is '/'-separated segments of "
                "letters, digits, '.', '_', '+' or '-' (no empty, '.' or '..' segment); "
                f"at most {MAX_NAME_LENGTH} characters in all",
            )
        )
    if fields.description is not None and len(fields.description) > MAX_DESCRIPTION:
        violations.append(
            FieldViolation(prefix + "description", f"longer than {MAX_DESCRIPTION} characters")
        )
    if fields.tags is not None:
        violations.extend(tag_violations(fields.tags, prefix + "tags"))
    if violations:
        raise InvalidArgument(
            "The config has invalid fields.", reason="INVALID_FIELDS", violations=violations
        )

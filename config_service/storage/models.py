"""ConfigService's tables. Every table carries tenant_id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db.idempotency import IdempotencyKeyColumns
from shared.db.metadata import service_metadata
from shared.db.types import JSONType, UTCDateTime


class Base(DeclarativeBase):
    """Declarative base of ConfigService's own metadata."""

    metadata = service_metadata()


class IdempotencyKey(IdempotencyKeyColumns, Base):
    """First responses of CreateConfig calls that carried a request_id."""

    __tablename__ = "config_idempotency_keys"


class ConfigRow(Base):
    """The current state of a config. A deleted config keeps its row (and so its id)."""

    __tablename__ = "configs"
    __table_args__ = (
        # Names are unique among live configs; a deleted config's name may be reused.
        Index(
            "uq_configs_live_name",
            "tenant_id",
            "name",
            unique=True,
            postgresql_where=text("delete_time IS NULL"),
            sqlite_where=text("delete_time IS NULL"),
        ),
        Index("ix_configs_bundle_name", "tenant_id", "bundle_name"),
        # A package's files, and `git+https://…#subdirectory=PATH` lookups.
        Index("ix_configs_namespace", "tenant_id", "namespace"),
        Index("ix_configs_source_path", "tenant_id", "source_key", "path"),
        # Listings of a regular caller filter by owner (beside ORG and the caller's team).
        Index("ix_configs_owner", "tenant_id", "owner"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    config_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    revision: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str] = mapped_column(String(64))
    yaml_content: Mapped[str] = mapped_column(Text)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    bundle_name: Mapped[str] = mapped_column(String(256), default="")
    # BUNDLE, AGENT or CONTEXT; the package (namespace), the file's path in it, and where
    # the package came from. A config created on its own is a BUNDLE of no package.
    kind: Mapped[str] = mapped_column(String(16), default="BUNDLE")
    namespace: Mapped[str] = mapped_column(String(128), default="")
    path: Mapped[str] = mapped_column(String(256), default="")
    source_uri: Mapped[str] = mapped_column(String(1024), default="")
    # source_uri as references match it: `@REF` and fragment dropped (canonical_source).
    source_key: Mapped[str] = mapped_column(String(1024), default="")
    # Who created it and their team then; who else sees it (PRIVATE, TEAM or ORG).
    owner: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[str] = mapped_column(String(16), default="ORG")
    team: Mapped[str] = mapped_column(String(128), default="")
    create_time: Mapped[datetime] = mapped_column(UTCDateTime())
    update_time: Mapped[datetime] = mapped_column(UTCDateTime())
    delete_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ConfigRevisionRow(Base):
    """One immutable revision: the config as it was after a change."""

    __tablename__ = "config_revisions"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    config_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    etag: Mapped[str] = mapped_column(String(64))
    yaml_content: Mapped[str] = mapped_column(Text)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    kind: Mapped[str] = mapped_column(String(16), default="BUNDLE")
    namespace: Mapped[str] = mapped_column(String(128), default="")
    path: Mapped[str] = mapped_column(String(256), default="")
    source_uri: Mapped[str] = mapped_column(String(1024), default="")
    owner: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[str] = mapped_column(String(16), default="ORG")
    team: Mapped[str] = mapped_column(String(128), default="")
    # When the config was first created, and when this revision was written.
    create_time: Mapped[datetime] = mapped_column(UTCDateTime())
    revision_time: Mapped[datetime] = mapped_column(UTCDateTime())


class ConfigChangeRow(Base):
    """The change log behind WatchConfigs: ids only, gap-free sequences.

    `sequence` orders every tenant's changes (for the service identity that follows them
    all); `tenant_sequence` numbers one tenant's, which is all a tenant ever sees.
    """

    __tablename__ = "config_changes"
    __table_args__ = (
        Index("ix_config_changes_tenant_sequence", "tenant_id", "sequence"),
        Index("uq_config_changes_tenant_sequence", "tenant_id", "tenant_sequence", unique=True),
    )

    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tenant_id: Mapped[str] = mapped_column(String(64))
    tenant_sequence: Mapped[int] = mapped_column(BigInteger)
    config_id: Mapped[str] = mapped_column(String(64))
    change_type: Mapped[str] = mapped_column(String(16))
    revision: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(256))
    change_time: Mapped[datetime] = mapped_column(UTCDateTime())

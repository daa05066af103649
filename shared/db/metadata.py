"""Metadata conventions shared by both services' tables."""

from __future__ import annotations

from sqlalchemy import MetaData

# Deterministic constraint names, so migrations can name what they alter on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata() -> MetaData:
    """A fresh MetaData for one service's tables."""
    return MetaData(naming_convention=NAMING_CONVENTION)

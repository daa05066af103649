"""Throwaway databases for storage tests: a SQLite file, or a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def in_ci() -> bool:
    """True under CI, where PostgreSQL is required rather than optional."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def postgres_admin_url() -> str:
    """The server used for PostgreSQL tests (TANDEM_TEST_DATABASE_URL, or the local default)."""
    return os.environ.get("TANDEM_TEST_DATABASE_URL", DEFAULT_POSTGRES_URL)


def _conninfo(url: str, database: str | None = None) -> str:
    parsed = make_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@cache
def postgres_unavailable_reason() -> str | None:
    """None when PostgreSQL answers; otherwise why not."""
    try:
        with psycopg.connect(_conninfo(postgres_admin_url()), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {make_url(postgres_admin_url())!r} is unreachable: {exc}"
    return None


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Creates an empty database for one test and drops it afterwards; yields its URL."""
    name = f"tandem_test_{uuid.uuid4().hex[:16]}"
    admin = _conninfo(postgres_admin_url())
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = make_url(postgres_admin_url()).set(database=name, drivername="postgresql+psycopg")
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def require_postgres() -> None:
    """Skips (or, under CI, fails) the current test when PostgreSQL cannot be reached."""
    reason = postgres_unavailable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"PostgreSQL is required in CI. {reason}")
    pytest.skip(reason)

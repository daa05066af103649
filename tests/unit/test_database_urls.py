"""Driver selection for the two supported databases."""

from __future__ import annotations

import pytest

from shared.db.engine import async_url, sync_url
from shared.errors import InvalidArgument


@pytest.mark.parametrize(
    ("given", "async_driver", "sync_driver"),
    [
        ("sqlite:///tandem.db", "sqlite+aiosqlite", "sqlite+pysqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite", "sqlite+pysqlite"),
        ("postgresql://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
    ],
)
def test_each_backend_gets_its_drivers(given: str, async_driver: str, sync_driver: str) -> None:
    assert async_url(given).drivername == async_driver
    assert sync_url(given).drivername == sync_driver


def test_passwords_and_databases_survive() -> None:
    url = async_url("postgresql://user:s3cret@host:5433/tandem")
    assert (url.password, url.port, url.database) == ("s3cret", 5433, "tandem")


def test_other_backends_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="mysql"):
        async_url("mysql://u@h/db")

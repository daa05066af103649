"""Several engines opening one new SQLite file at once, as both services do in tests and
`make run`: none may fail with "database is locked" while the file is switched to WAL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import WRITE_OPTION, create_engine, dispose_engine


async def test_engines_racing_to_open_a_new_file_all_get_in(tmp_path: Path) -> None:
    for round_number in range(15):
        url = f"sqlite:///{tmp_path / f'race-{round_number}.db'}"
        engines = [create_engine(url) for _ in range(4)]
        # As the services' units of work that write: BEGIN IMMEDIATE.
        writers = [engine.execution_options(**{WRITE_OPTION: True}) for engine in engines]
        try:

            async def write(
                index: int, engine_index: int, writers: list[AsyncEngine] = writers
            ) -> str:
                async with writers[engine_index].begin() as connection:
                    await connection.execute(
                        text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, who INT)")
                    )
                    await connection.execute(
                        text("INSERT INTO t (who) VALUES (:who)"), {"who": index}
                    )
                    mode = await connection.scalar(text("PRAGMA journal_mode"))
                return str(mode)

            modes = await asyncio.gather(*(write(i, i % 4) for i in range(8)))
            assert set(modes) == {"wal"}
        finally:
            for engine in engines:
                await dispose_engine(engine)

"""Event retention over the in-memory unit of work: which deltas go, and what stays."""

from __future__ import annotations

from shared.clock import utcnow
from tests.support.retention import check_compaction
from tests.unit.session_fakes import FakeSessionDatabase


async def test_retention_compacts_finished_turns_past_it_and_nothing_else() -> None:
    await check_compaction(FakeSessionDatabase().unit_of_work, utcnow())

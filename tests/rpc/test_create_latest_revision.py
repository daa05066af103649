"""CreateSession without a revision pins the latest: never one older than a write its caller
saw finish, even while a burst of creates shares ConfigService reads."""

from __future__ import annotations

import asyncio
import time

from google.protobuf import field_mask_pb2

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.configs import create_config
from tests.support.pair import Stack


async def test_a_create_after_an_update_pins_the_update_even_under_a_burst(stack: Stack) -> None:
    await create_config(stack, "app", "bundle:\n  name: v1\n")
    # (when the create was sent, the revision it pinned)
    created: list[tuple[float, int]] = []
    # (when a write was seen to finish, its revision)
    writes: list[tuple[float, int]] = []
    stop = asyncio.Event()
    progress = asyncio.Event()

    async def keep_creating() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            session = await stack.sessions.CreateSession(
                session_service_pb2.CreateSessionRequest(config_id="app")
            )
            created.append((sent, session.config_revision))
            progress.set()

    burst = [asyncio.create_task(keep_creating()) for _ in range(16)]
    try:
        for revision in (2, 3, 4):
            while len(created) < 20 * revision:
                progress.clear()
                await progress.wait()
            updated = await stack.configs.UpdateConfig(
                config_service_pb2.UpdateConfigRequest(
                    config=config_pb2.Config(
                        config_id="app", yaml_content=f"bundle:\n  name: v{revision}\n"
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["yaml_content"]),
                )
            )
            writes.append((time.monotonic(), revision))
            assert updated.revision == revision
            # The very next create, with the burst still running, pins what was just written.
            first = await stack.sessions.CreateSession(
                session_service_pb2.CreateSessionRequest(config_id="app")
            )
            assert first.config_revision == revision
    finally:
        stop.set()
        await asyncio.gather(*burst)
    # And so did every create of the burst sent after a write was seen to finish.
    for sent, revision in created:
        seen_before = [rev for when, rev in writes if when < sent]
        if seen_before:
            assert revision >= max(seen_before)
    assert {revision for _, revision in created} >= {1, 2, 3, 4}

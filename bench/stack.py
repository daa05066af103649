"""Sessions to measure, on both services started by the one in-process harness.

The benchmarks start the services with `tests.support.pair.running_pair`, as the tests do
(run them from the repository root: `python -m bench.<name>`).
"""

from __future__ import annotations

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from tests.support.pair import Stack


async def started_sessions(running: Stack, config_id: str, document: str, count: int) -> list[str]:
    """Stores the config, then starts count sessions on it; their ids."""
    await running.configs.CreateConfig(
        config_service_pb2.CreateConfigRequest(
            config_id=config_id,
            config=config_pb2.Config(name=config_id, yaml_content=document),
        )
    )
    request = session_service_pb2.CreateSessionRequest(config_id=config_id, start=True)
    return [(await running.sessions.CreateSession(request)).session_id for _ in range(count)]

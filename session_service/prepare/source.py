"""Where preparation reads configs from: a port, so preparation knows no transport.

SessionService's implementation is the gRPC client of ConfigService
(`session_service/configs_client.py`), which reads with the caller's own credentials.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from shared.visibility import Visibility


@dataclass(frozen=True)
class FetchedConfig:
    """What SessionService needs of one config revision."""

    config_id: str
    name: str
    revision: int
    yaml_content: str
    # Where it came from when it is a file of an imported bundle package.
    kind: str = "BUNDLE"
    namespace: str = ""
    path: str = ""
    source_uri: str = ""
    # Who may see it, as ConfigService says: preparations shared through the cache are
    # handed only to callers who may see every config they were composed from.
    owner: str = ""
    visibility: Visibility = Visibility.ORG
    team: str = ""


class ConfigSource(Protocol):
    """Reads the caller's configs."""

    async def get(
        self, config_id: str, revision: int = 0, time_remaining: float | None = None
    ) -> FetchedConfig:
        """One revision (0: the latest); NotFound when there is none."""
        ...

    async def get_by_name(self, name: str, time_remaining: float | None = None) -> FetchedConfig:
        """The latest revision of the live config called name; NotFound when there is none."""
        ...

    async def find(
        self, filter_text: str, time_remaining: float | None = None, limit: int = 100
    ) -> list[FetchedConfig]:
        """Live configs matching a ListConfigs filter, with their content."""
        ...


@dataclass(frozen=True)
class Change:
    """One entry of ConfigService's change stream."""

    sequence: int
    config_id: str
    name: str
    revision: int
    created: bool
    deleted: bool


class ConfigChanges(Protocol):
    """Follows config changes of every tenant, under the service's own identity."""

    def watch(self, after_sequence: int, established: Callable[[], None]) -> AsyncIterator[Change]:
        """Changes after after_sequence (0: from now on), until the stream breaks.

        established is called once the stream is accepted, before any change; a stream
        whose history no longer reaches after_sequence raises OutOfRange.
        """
        ...

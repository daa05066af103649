"""Requests that carry a `request_id`: what a repeat is, and how a create that raced one ends.

A repeat of the same request returns the first response and writes nothing else; a repeat of
the id with a different request is refused, since the client reused an id by mistake. Where
first responses are stored is each service's storage (`shared/db/idempotency.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from shared.errors import Aborted, InvalidArgument

MAX_REQUEST_ID_LENGTH = 128

T = TypeVar("T")


@dataclass(frozen=True)
class StoredResponse:
    """A first response, as serialized bytes."""

    response: bytes


class IdempotencyRepo(Protocol):
    """Where a service stores the first responses of requests that carry a request_id."""

    async def find(
        self, tenant_id: str, method: str, request_id: str, request_fingerprint: str
    ) -> StoredResponse | None:
        """The earlier identical request's response; InvalidArgument for a reused id."""

    async def record(
        self,
        tenant_id: str,
        method: str,
        request_id: str,
        request_fingerprint: str,
        response: bytes,
    ) -> None:
        """Stores the first response; Aborted (REQUEST_ID_CONFLICT) when one exists."""


def fingerprint(payload: bytes) -> str:
    """A stable digest of a request, to tell a true repeat from a reused id."""
    return hashlib.sha256(payload).hexdigest()


def check_request_id(request_id: str) -> None:
    """Refuses request ids the table cannot hold."""
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument(
            f"request_id is longer than {MAX_REQUEST_ID_LENGTH} characters.",
            reason="REQUEST_ID_TOO_LONG",
        )


async def first_response(attempt: Callable[[], Awaitable[T]], tries: int = 3) -> T:
    """attempt(), tried again when a concurrent duplicate of its request_id won the race.

    The winner has committed by then, so the retry finds and returns the first response
    instead of writing again.
    """
    for number in range(tries):
        try:
            return await attempt()
        except Aborted as exc:
            if exc.reason != "REQUEST_ID_CONFLICT" or number == tries - 1:
                raise
    raise AssertionError("unreachable")

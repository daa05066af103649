"""Wake-ups for followers of session event logs, and cancel requests, across replicas.

In process, whoever commits events hands them to this replica's `EventHub`. On PostgreSQL the
writer also NOTIFYs inside its transaction (delivered at commit) with the session's log key
and the last sequence it wrote; every replica's listener hands that to its hub, which then
knows what its feed lacks. A replica ignores NOTIFYs of events its hub already holds.
"""

from __future__ import annotations

from collections.abc import Callable

from session_service.turns.hub import EventHub

EVENTS_CHANNEL = "tandem_session_events"
CANCEL_CHANNEL = "tandem_turn_cancel"


def log_key(tenant_id: str, session_id: str) -> str:
    """The key of one session's event log, in the hub and in NOTIFY payloads."""
    return f"{tenant_id}/{session_id}"


def events_payload(key: str, last_sequence: int) -> str:
    """The NOTIFY payload saying the log under key is committed up to last_sequence."""
    return f"{key} {last_sequence}"


def parse_events_payload(payload: str) -> tuple[str, int | None]:
    """(key, last sequence) of a NOTIFY payload; None when it names no sequence."""
    key, _, sequence = payload.rpartition(" ")
    if key and sequence.isdigit():
        return key, int(sequence)
    return payload, None


class TurnSignals:
    """This replica's event hub and its cancel entry point."""

    def __init__(self) -> None:
        self.hub = EventHub()
        # Set by the runner: cancels a turn if it runs in this process.
        self.cancel_local: Callable[[str], bool] = lambda _turn_id: False

    def on_events_payload(self, payload: str | None) -> None:
        """A NOTIFY (or a reconnect, None: anything may have been missed) on the events channel."""
        if payload is None:
            self.hub.wake_all(dirty=True)
        else:
            self.hub.committed(*parse_events_payload(payload))

    def on_cancel_payload(self, payload: str | None) -> None:
        """A NOTIFY on the cancel channel: the payload is a turn id."""
        if payload:
            self.cancel_local(payload)

"""Wake-ups for readers of session event logs, and cancel requests, across replicas.

In process they are direct calls. On PostgreSQL the writer also NOTIFYs inside its
transaction (delivered at commit), carrying ids only, and every replica's listener turns
them back into the same calls; a reader always re-reads the database when woken.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.db.notify import KeyedBroadcast

EVENTS_CHANNEL = "tandem_session_events"
CANCEL_CHANNEL = "tandem_turn_cancel"


def log_key(tenant_id: str, session_id: str) -> str:
    """The wake-up key (and NOTIFY payload) of one session's event log."""
    return f"{tenant_id}/{session_id}"


class TurnSignals:
    """This replica's wake-ups for event-log followers and its cancel entry point."""

    def __init__(self) -> None:
        self.events = KeyedBroadcast()
        # Set by the runner: cancels a turn if it runs in this process.
        self.cancel_local: Callable[[str], bool] = lambda _turn_id: False

    def on_events_payload(self, payload: str | None) -> None:
        """A NOTIFY (or reconnect, None) on the events channel."""
        if payload is None:
            self.events.notify_all()
        else:
            self.events.notify(payload)

    def on_cancel_payload(self, payload: str | None) -> None:
        """A NOTIFY on the cancel channel: the payload is a turn id."""
        if payload:
            self.cancel_local(payload)

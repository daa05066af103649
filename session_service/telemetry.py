"""SessionService's own telemetry: turn spans and metrics, cache and stream gauges."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from session_service.prepare.cache import PreparedCache
from shared.telemetry.setup import Telemetry

# Seconds: turns run from under a second (echo) to minutes (long tool loops).
_TURN_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
_FIRST_EVENT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


@dataclass(frozen=True)
class TurnInstruments:
    """What a running turn reports through: spans, and its duration and token counts."""

    tracer: trace.Tracer
    duration: metrics.Histogram
    first_event: metrics.Histogram
    tokens: metrics.Counter

    @classmethod
    def create(cls, telemetry: Telemetry) -> TurnInstruments:
        """Instruments on telemetry's meter (no-ops when telemetry is off)."""
        meter = telemetry.meter()
        return cls(
            tracer=telemetry.tracer(),
            duration=meter.create_histogram(
                "tandem.turn.duration",
                unit="s",
                description="From a turn's start to its final event.",
                explicit_bucket_boundaries_advisory=_TURN_BUCKETS,
            ),
            first_event=meter.create_histogram(
                "tandem.turn.time_to_first_event",
                unit="s",
                description="From a turn's start to the provider's first streamed event.",
                explicit_bucket_boundaries_advisory=_FIRST_EVENT_BUCKETS,
            ),
            tokens=meter.create_counter(
                "tandem.turn.tokens",
                unit="{token}",
                description="Tokens reported by providers, by provider and token type.",
            ),
        )

    @classmethod
    def off(cls) -> TurnInstruments:
        """Records nothing."""
        return cls.create(Telemetry.off())


def observe_gauges(
    telemetry: Telemetry,
    cache: PreparedCache,
    active_turns: Callable[[], int],
    open_streams: Callable[[], int],
) -> None:
    """Reads the cache counters and the turn and stream counts each time metrics export.

    Observed rather than counted on the hot path, so the cache and the streams stay free of
    telemetry calls.
    """
    if telemetry.meter_provider is None:
        return
    meter = telemetry.meter()

    def reading(value: Callable[[], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value())]

        return callback

    for name, value, description in (
        ("hits", lambda: cache.stats().hits, "Prepared-bundle cache lookups that hit."),
        ("misses", lambda: cache.stats().misses, "Prepared-bundle cache lookups that missed."),
        ("evictions", lambda: cache.stats().evictions, "Prepared bundles dropped."),
    ):
        meter.create_observable_counter(
            f"tandem.prepared_cache.{name}",
            [reading(value)],
            unit="{bundle}",
            description=description,
        )
    meter.create_observable_up_down_counter(
        "tandem.turns.active",
        [reading(active_turns)],
        unit="{turn}",
        description="Turns running in this replica.",
    )
    meter.create_observable_up_down_counter(
        "tandem.streams.open",
        [reading(open_streams)],
        unit="{stream}",
        description="Event streams (SendMessage and StreamEvents) open on this replica.",
    )

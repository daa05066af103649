"""Load loops and figure printing shared by the benchmarks."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

Figures = tuple[float, float, float]  # (calls per second, p50 ms, p99 ms)


def figures(latencies: list[float], elapsed: float) -> Figures:
    """Throughput and p50/p99 of a run."""
    cuts = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, cuts[49] * 1e3, cuts[98] * 1e3


async def run_load(clients: int, seconds: float, call: Callable[[], Awaitable[object]]) -> Figures:
    """Figures of call repeated by clients concurrent loops for seconds."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return figures(latencies, time.perf_counter() - started)


async def run_calls(
    calls: int, concurrency: int, call: Callable[[int], Awaitable[object]]
) -> Figures:
    """Figures of calls numbered 0..calls-1, concurrency at a time."""
    latencies: list[float] = []
    queue = iter(range(calls))

    async def worker() -> None:
        for n in queue:
            started = time.perf_counter()
            await call(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return figures(latencies, time.perf_counter() - started)


def report(label: str, result: Figures) -> None:
    """Prints one row."""
    rate, p50, p99 = result
    print(f"{label:<48} {rate:>8.0f}/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms", flush=True)

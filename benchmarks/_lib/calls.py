"""Timing awaited calls for the tool benchmarks: per-call latencies of one round, and
the best of several rounds, each statistic on its own."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Call = Callable[[], Awaitable[Any]]


@dataclass
class Sample:
    """One round of one case: per-call latencies (ns) and the wall time of the round."""

    lat_ns: list[int]
    elapsed_ns: int

    @property
    def p50_us(self) -> float:
        return statistics.median(self.lat_ns) / 1000

    @property
    def p99_us(self) -> float:
        lat = sorted(self.lat_ns)
        return lat[max(0, int(len(lat) * 0.99) - 1)] / 1000

    @property
    def per_s(self) -> float:
        return len(self.lat_ns) / (self.elapsed_ns / 1e9)


@dataclass
class Best:
    """The best of several rounds, each statistic on its own."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def p50_us(self) -> float:
        return min(s.p50_us for s in self.samples)

    @property
    def p99_us(self) -> float:
        return min(s.p99_us for s in self.samples)

    @property
    def per_s(self) -> float:
        return max(s.per_s for s in self.samples)


async def run(call: Call, n: int, concurrency: int = 1) -> Sample:
    """``n`` calls from ``concurrency`` callers, each awaiting its calls one by one."""
    lat: list[int] = []
    clock = time.perf_counter_ns

    async def caller(k: int) -> None:
        for _ in range(k):
            t0 = clock()
            await call()
            lat.append(clock() - t0)

    gc.collect()
    per = [n // concurrency + (i < n % concurrency) for i in range(concurrency)]
    start = clock()
    if concurrency == 1:
        await caller(n)
    else:
        await asyncio.gather(*(caller(k) for k in per))
    return Sample(lat, clock() - start)

"""Bus benchmark: Loom (Python → Rust bus → Python) vs a pure-asyncio bus, same run.

The baseline is the usual in-process asyncio bus: a dict of topic → asyncio.Queue per
subscriber, one consumer task per subscriber awaiting the handler. Both sides go
through their public API (Loom: ``ctx.emit`` and ``ctx.subscribe``).

Measures, for 1→1 and 1→10 subscribers:
  * throughput: events/s from the first publish until every handler saw every event;
  * latency: publish→handler p50/p99 at a paced 10k events/s.

Usage: python benchmarks/bus.py [--smoke] [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loom import Agent, Runtime

Handler = Callable[[Any], Awaitable[None]]


# -- the baseline: a pure-asyncio bus -----------------------------------------------


@dataclass(slots=True)
class Event:
    topic: str
    type: str
    payload: Any
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: float = field(default_factory=time.time)


class AsyncioBus:
    def __init__(self, bare: bool = False) -> None:
        # bare: queue the payload itself, no envelope (a lower bound, not a real bus)
        self.bare = bare
        self.queues: dict[str, list[asyncio.Queue[Event]]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def subscribe(self, topic: str, handler: Handler) -> None:
        q: asyncio.Queue[Event] = asyncio.Queue()
        self.queues.setdefault(topic, []).append(q)

        async def consume() -> None:
            while True:
                ev = await q.get()
                await handler(ev)

        self.tasks.append(asyncio.create_task(consume()))

    async def emit(self, topic: str, type: str = "event", payload: Any = None) -> None:
        ev = payload if self.bare else Event(topic, type, payload)
        for q in self.queues.get(topic, ()):
            q.put_nowait(ev)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# -- the harness -----------------------------------------------------------------------


@dataclass
class Result:
    name: str
    subscribers: int
    events_per_s: float
    p50_us: float = float("nan")
    p99_us: float = float("nan")


class Counter:
    def __init__(self, expected: int) -> None:
        self.n = 0
        self.expected = expected
        self.done = asyncio.Event()
        self.lat: list[int] = []

    def hit(self, sent_ns: int | None) -> None:
        if sent_ns is not None:
            self.lat.append(time.perf_counter_ns() - sent_ns)
        self.n += 1
        if self.n >= self.expected:
            self.done.set()


async def setup_loom(
    subs: int, counter: Counter, mode: str
) -> tuple[Any, Callable[[], Awaitable[None]]]:
    rt = Runtime()
    pub = Agent("pub", runtime=rt)
    await pub.start()
    hosts = []
    for i in range(subs):
        a = Agent(f"sub{i}", runtime=rt)
        await a.start()
        if mode == "batch":

            async def on_batch(ctx: Any, pattern: str, events: list[Any]) -> None:
                for e in events:
                    counter.hit(e.payload)

            a.ctx.subscribe("bench.topic", on_batch=on_batch, qos="reliable", capacity=1 << 20)
        else:

            async def on_event(ctx: Any, topic: str, e: Any) -> None:
                counter.hit(e.payload)

            a.ctx.subscribe(
                "bench.topic",
                on_event,
                qos="reliable",
                capacity=1 << 20,
                max_concurrency=1 if mode == "ordered" else 16,
            )
        hosts.append(a)

    async def close() -> None:
        await rt.stop(timeout=1)

    return pub.ctx.emit, close


async def setup_asyncio(
    subs: int, counter: Counter, bare: bool = False
) -> tuple[Any, Callable[[], Awaitable[None]]]:
    bus = AsyncioBus(bare)
    for _ in range(subs):

        async def on_event(e: Any) -> None:
            counter.hit(e if bare else e.payload)

        bus.subscribe("bench.topic", on_event)
    return bus.emit, bus.close


async def make(impl: str, subs: int, counter: Counter) -> tuple[Any, Callable[[], Awaitable[None]]]:
    if impl.startswith("asyncio"):
        return await setup_asyncio(subs, counter, bare=impl == "asyncio:bare")
    return await setup_loom(subs, counter, impl.split(":")[1])


async def throughput(impl: str, subs: int, n: int) -> float:
    counter = Counter(n * subs)
    emit, close = await make(impl, subs, counter)
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        await emit("bench.topic", "tick", None)
    await counter.done.wait()
    elapsed = time.perf_counter() - start
    await close()
    return n / elapsed


async def latency(impl: str, subs: int, n: int, rate: float) -> tuple[float, float]:
    counter = Counter(n * subs)
    emit, close = await make(impl, subs, counter)
    gc.collect()
    interval = 1e9 / rate
    next_at = time.perf_counter_ns()
    for _ in range(n):
        while time.perf_counter_ns() < next_at:  # noqa: ASYNC110 - a spin: subscribers run
            await asyncio.sleep(0)
        await emit("bench.topic", "tick", time.perf_counter_ns())
        next_at += interval
    await counter.done.wait()
    await close()
    lat = sorted(counter.lat)
    p50 = statistics.median(lat) / 1000
    p99 = lat[int(len(lat) * 0.99) - 1] / 1000
    return p50, p99


IMPLS = {
    "asyncio": "asyncio bus (Queue per subscriber)",
    "asyncio:bare": "  lower bound: Queue of bare payloads",
    "loom:ordered": "loom per-event (max_concurrency=1)",
    "loom:concurrent": "loom per-event (max_concurrency=16)",
    "loom:batch": "loom batched delivery (on_batch)",
}


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="a few-second run for CI")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    n = args.events or (2_000 if args.smoke else 100_000)
    lat_n = 500 if args.smoke else 20_000
    rounds = args.rounds or (1 if args.smoke else 3)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"
    )
    print(f"events per round: {n} (throughput), {lat_n} at 10k/s (latency); best of {rounds}\n")
    results: list[Result] = []
    for subs in (1, 10):
        for impl, label in IMPLS.items():
            best = max(
                [await throughput(impl, subs, n // subs if subs > 1 else n) for _ in range(rounds)]
            )
            lats = [await latency(impl, subs, lat_n, 10_000) for _ in range(rounds)]
            p50, p99 = min(lats, key=lambda x: x[1])
            results.append(Result(label, subs, best, p50, p99))

    header = (
        f"{'implementation':40} {'subs':>4} {'events/s':>12} {'deliveries/s':>13}"
        f" {'p50 µs':>8} {'p99 µs':>8} {'vs asyncio':>10}"
    )
    print(header)
    print("-" * len(header))
    base = {r.subscribers: r.events_per_s for r in results if r.name.startswith("asyncio")}
    for r in results:
        ratio = r.events_per_s / base[r.subscribers]
        deliveries = r.events_per_s * r.subscribers
        print(
            f"{r.name:40} {r.subscribers:>4} {r.events_per_s:>12,.0f} {deliveries:>13,.0f}"
            f" {r.p50_us:>8.1f} {r.p99_us:>8.1f} {ratio:>9.2f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())

"""Bus benchmark: Loom (Python → Rust bus → Python) against two asyncio buses, same run.

The main baseline is the **plain asyncio bus** a good engineer would write for one
process: plain ``dict`` events, a bounded ``asyncio.Queue`` per subscriber filled with
``put_nowait`` (``await put`` only when full), one consumer task per subscriber that
takes with ``get_nowait`` while the queue is non-empty and awaits the handler, no ids,
no timestamps. Ratios are against it.

The second baseline gives each event an envelope with the information Loom's carries
(uuid4 id, ``time.time()`` timestamp, topic, type, payload: a slots dataclass), on the
same queues — what the README's earlier "~3x" was measured against.

Loom goes through its public Agent API: ``Agent(topics=..., on_event=...)`` (or
``on_batch=``) subscribers and ``ctx.emit`` from a publisher agent. Every queue (Loom's
and asyncio's) is bounded at the same capacity, larger than a round, so no publisher
ever waits for room: the figures are the per-event cost.

Measures, for 1→1 and 1→10 subscribers:
  * throughput: events/s from the first publish until every handler saw every event;
  * latency: publish→handler p50/p99 at a paced 10k events/s, evenly spaced (one every
    100 µs) and in bursts of 50 (50 back to back every 5 ms).

The arms run interleaved (every arm once per round, ``--rounds`` rounds); the best
round of each is reported (throughput: highest; latency: lowest p99), with the load
average before and after.

Usage: python benchmarks/bus.py [--smoke] [--events N] [--rounds N]
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
Emit = Callable[[str, str, Any], Awaitable[None]]

TOPIC = "bench.topic"
#: Every queue's bound (Loom's ``capacity`` and the asyncio queues' ``maxsize``).
CAPACITY = 1 << 20
RATE = 10_000
BURST = 50


# -- the baselines: asyncio buses -----------------------------------------------------


@dataclass(slots=True)
class Event:
    """The uuid4 envelope: the fields Loom's Envelope carries, built in Python."""

    topic: str
    type: str
    payload: Any
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: float = field(default_factory=time.time)


class AsyncioBus:
    """topic → bounded queues, one consumer task per subscriber.

    ``envelope=False`` (the plain bus): events are plain dicts. ``envelope=True``: a
    uuid4/timestamp :class:`Event` per publish."""

    def __init__(self, *, envelope: bool, capacity: int = CAPACITY) -> None:
        self.envelope = envelope
        self.capacity = capacity
        self.queues: dict[str, list[asyncio.Queue[Any]]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def subscribe(self, topic: str, handler: Handler) -> None:
        q: asyncio.Queue[Any] = asyncio.Queue(self.capacity)
        self.queues.setdefault(topic, []).append(q)

        async def consume() -> None:
            get, get_nowait, empty = q.get, q.get_nowait, q.empty
            while True:
                # Take without a coroutine while events are queued; await when empty.
                ev = get_nowait() if not empty() else await get()
                try:
                    await handler(ev)
                except Exception:  # a failing handler must not kill its consumer
                    pass

        self.tasks.append(asyncio.create_task(consume()))

    async def emit(self, topic: str, type: str = "event", payload: Any = None) -> None:
        if self.envelope:
            ev: Any = Event(topic, type, payload)
        else:
            ev = {"topic": topic, "type": type, "payload": payload}
        for q in self.queues.get(topic, ()):
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:  # backpressure, as Loom's reliable QoS
                await q.put(ev)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# -- the harness -----------------------------------------------------------------------


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


async def setup_loom(subs: int, counter: Counter, mode: str) -> tuple[Emit, Callable[[], Any]]:
    rt = Runtime()
    pub = Agent("pub", runtime=rt)
    await pub.start()
    hit = counter.hit
    for i in range(subs):
        if mode == "batch":

            async def on_batch(ctx: Any, pattern: str, events: list[Any]) -> None:
                for e in events:
                    hit(e.payload)

            a = Agent(f"sub{i}", [TOPIC], on_batch=on_batch, capacity=CAPACITY, runtime=rt)
        else:

            async def on_event(ctx: Any, topic: str, e: Any) -> None:
                hit(e.payload)

            a = Agent(
                f"sub{i}",
                [TOPIC],
                on_event=on_event,
                capacity=CAPACITY,
                max_concurrency=1 if mode == "ordered" else 16,
                runtime=rt,
            )
        await a.start()

    async def close() -> None:
        await rt.stop(timeout=1)

    return pub.ctx.emit, close


async def setup_asyncio(
    subs: int, counter: Counter, envelope: bool
) -> tuple[Emit, Callable[[], Any]]:
    bus = AsyncioBus(envelope=envelope)
    hit = counter.hit
    for _ in range(subs):
        if envelope:

            async def on_event(e: Any) -> None:
                hit(e.payload)

        else:

            async def on_event(e: Any) -> None:
                hit(e["payload"])

        bus.subscribe(TOPIC, on_event)
    return bus.emit, bus.close


async def make(impl: str, subs: int, counter: Counter) -> tuple[Emit, Callable[[], Any]]:
    if impl.startswith("asyncio"):
        return await setup_asyncio(subs, counter, envelope=impl == "asyncio:uuid4")
    return await setup_loom(subs, counter, impl.split(":")[1])


async def throughput(impl: str, subs: int, n: int) -> float:
    counter = Counter(n * subs)
    emit, close = await make(impl, subs, counter)
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        await emit(TOPIC, "tick", None)
    await counter.done.wait()
    elapsed = time.perf_counter() - start
    await close()
    return n / elapsed


async def latency(impl: str, subs: int, n: int, burst: int) -> tuple[float, float]:
    """p50, p99 in µs of publish→handler at RATE events/s, ``burst`` back to back."""
    counter = Counter(n * subs)
    emit, close = await make(impl, subs, counter)
    gc.collect()
    perf = time.perf_counter_ns
    interval = 1e9 * burst / RATE
    next_at = perf()
    for _ in range(n // burst):
        while perf() < next_at:  # noqa: ASYNC110 - a spin: subscribers run meanwhile
            await asyncio.sleep(0)
        for _ in range(burst):
            await emit(TOPIC, "tick", perf())
        next_at += interval
    await counter.done.wait()
    await close()
    lat = sorted(counter.lat)
    return statistics.median(lat) / 1000, lat[int(len(lat) * 0.99) - 1] / 1000


IMPLS = {
    "asyncio:plain": "asyncio plain bus (dict events)",
    "asyncio:uuid4": "asyncio bus + uuid4/time envelope",
    "loom:ordered": "loom per-event (max_concurrency=1)",
    "loom:concurrent": "loom per-event (max_concurrency=16)",
    "loom:batch": "loom batched delivery (on_batch)",
}


@dataclass
class Row:
    impl: str
    subs: int
    events_per_s: float = 0.0
    even: tuple[float, float] = (float("inf"), float("inf"))
    bursts: tuple[float, float] = (float("inf"), float("inf"))


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="a few-second run for CI")
    ap.add_argument("--events", type=int, default=None, help="events per throughput round")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--only", default=None, help="comma-separated arms (default: all)")
    ap.add_argument("--no-latency", action="store_true")
    args = ap.parse_args()
    n = args.events or (2_000 if args.smoke else 100_000)
    lat_n = 500 if args.smoke else 10_000
    rounds = args.rounds or (1 if args.smoke else 5)
    impls = args.only.split(",") if args.only else list(IMPLS)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"
    )
    print(
        f"throughput: {n} events per round; latency: {lat_n} events at {RATE}/s, evenly "
        f"spaced and in bursts of {BURST}; {rounds} interleaved rounds, best of each"
    )
    print(f"load average before: {load()}\n")
    rows = {(impl, subs): Row(impl, subs) for subs in (1, 10) for impl in impls}
    for _ in range(rounds):
        for subs in (1, 10):
            for impl in impls:
                row = rows[impl, subs]
                eps = await throughput(impl, subs, n // subs if subs > 1 else n)
                row.events_per_s = max(row.events_per_s, eps)
                if args.no_latency:
                    continue
                row.even = min(row.even, await latency(impl, subs, lat_n, 1), key=lambda x: x[1])
                row.bursts = min(
                    row.bursts, await latency(impl, subs, lat_n, BURST), key=lambda x: x[1]
                )

    header = (
        f"{'implementation':38} {'subs':>4} {'events/s':>10} {'deliveries/s':>12} {'vs plain':>8}"
        f" {'even p50':>8} {'p99 µs':>7} {'burst p50':>9} {'p99 µs':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows.values():
        base = rows.get(("asyncio:plain", row.subs))
        ratio = f"{row.events_per_s / base.events_per_s:7.2f}x" if base else "       -"
        print(
            f"{IMPLS[row.impl]:38} {row.subs:>4} {row.events_per_s:>10,.0f}"
            f" {row.events_per_s * row.subs:>12,.0f} {ratio:>8}"
            f" {row.even[0]:>8.1f} {row.even[1]:>7.1f} {row.bursts[0]:>9.1f} {row.bursts[1]:>7.1f}"
        )
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    asyncio.run(main())

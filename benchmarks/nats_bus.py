"""NATS benchmark: Loom's bus over NATS vs raw ``nats-py``, in one run, against the
same ``nats-server -js`` (file storage in a temporary directory) started here.

Reliable path (JetStream), per side:
  * Loom: an agent's ``ctx.emit`` to a stored topic (waits for the publish ack) in one
    runtime; a ``reliable`` subscriber — a durable pull consumer, acked after the
    handler — in another runtime with its own connection.
  * raw nats-py: ``js.publish(subject, data, headers={"Nats-Msg-Id": id})`` awaited
    one at a time; a durable pull consumer, ``fetch(batch=64)`` and ``msg.ack()`` per
    message, on a second connection. The same stream settings (file storage).
  Measured: events/s from the first publish to the last handled event (one publisher
  awaiting each publish, as a handler does), and publish→handler latency p50/p99 with
  one event in flight at a time.

Core path (at most once):
  * Loom: ``ctx.emit`` in one runtime (the bridge sends it), a ``realtime`` subscriber
    in another runtime.
  * raw nats-py: ``nc.publish`` on one connection, a callback subscription on another.
  Measured: events/s from the first publish to the last received event.

Both sides encode the same ~100-byte JSON payload per event (``json.dumps`` on the raw
side) and decode it on arrival; Loom adds its envelope (one ``Loom`` header), the
local bus on both ends and a handler call per event, which is what the ratio prices.
Rounds alternate the sides; best of three.

Usage: python benchmarks/nats_bus.py [--smoke] [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.js import api

from _lib.nats_server import start_nats
from loom import Agent, Envelope, Runtime
from loom.nats import connect, enable_jetstream
from loom.nats.settings import JetStreamSettings

PAYLOAD: dict[str, Any] = {"order": 123456, "symbol": "BTC-USD", "qty": 0.25, "note": "x" * 40}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- Loom --------------------------------------------------------------------------------


async def loom_pair(url: str, stream: str, subject: str) -> tuple[Runtime, Runtime, Agent]:
    js = JetStreamSettings(stream=stream, dlq_prefix=f"dlq{stream}")
    pub_rt, sub_rt = Runtime(), Runtime()
    for rt in (pub_rt, sub_rt):
        bridge = await connect(rt, url)
        await enable_jetstream(rt, bridge, js, [subject])
    publisher = Agent("bench-publisher", runtime=pub_rt)
    await publisher.start()
    return pub_rt, sub_rt, publisher


async def loom_reliable(url: str, n: int, latency_n: int) -> tuple[float, list[float]]:
    tag = uuid.uuid4().hex[:8]
    stream, subject = f"L{tag}", f"bench.reliable.{tag}"
    pub_rt, sub_rt, publisher = await loom_pair(url, stream, subject)
    done = asyncio.Event()
    count = 0
    stamps: list[float] = []
    latency_mode = False
    arrived = asyncio.Event()

    async def handle(ctx: Any, topic: str, event: Envelope) -> None:
        nonlocal count
        if latency_mode:
            stamps.append(time.perf_counter())
            arrived.set()
            return
        count += 1
        if count == n:
            done.set()

    await Agent("bench-consumer", topics=[subject], on_event=handle, runtime=sub_rt).start()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            await publisher.ctx.emit(subject, "e", PAYLOAD)
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - t0
        latency_mode = True
        lat: list[float] = []
        for _ in range(latency_n):
            arrived.clear()
            t = time.perf_counter()
            await publisher.ctx.emit(subject, "e", PAYLOAD)
            await asyncio.wait_for(arrived.wait(), 10)
            lat.append(stamps[-1] - t)
    finally:
        await pub_rt.stop(timeout=5)
        await sub_rt.stop(timeout=5)
    return elapsed, lat


async def loom_core(url: str, n: int) -> float:
    pub_rt, sub_rt = Runtime(), Runtime()
    await connect(pub_rt, url)
    await connect(sub_rt, url)
    done = asyncio.Event()
    count = 0

    async def handle(ctx: Any, topic: str, event: Envelope) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    consumer = Agent(
        "bench-core", topics=["bench.core"], on_event=handle, qos="realtime", runtime=sub_rt
    )
    consumer.capacity = n + 10  # measure transport, not drops
    await consumer.start()
    publisher = Agent("bench-core-pub", runtime=pub_rt)
    await publisher.start()
    await asyncio.sleep(0.2)  # the NATS subscription is in place
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            await publisher.ctx.emit("bench.core", "e", PAYLOAD)
        await asyncio.wait_for(done.wait(), 120)
        return time.perf_counter() - t0
    finally:
        await pub_rt.stop(timeout=5)
        await sub_rt.stop(timeout=5)


# -- raw nats-py ---------------------------------------------------------------------------


async def raw_reliable(url: str, n: int, latency_n: int) -> tuple[float, list[float]]:
    tag = uuid.uuid4().hex[:8]
    stream, subject = f"R{tag}", f"bench.raw.{tag}"
    pub_nc, sub_nc = await nats.connect(url), await nats.connect(url)
    js_pub, js_sub = pub_nc.jetstream(), sub_nc.jetstream()
    await js_pub.add_stream(
        api.StreamConfig(
            name=stream,
            subjects=[subject],
            storage=api.StorageType.FILE,
            duplicate_window=120,
            max_age=7 * 24 * 3600,
        )
    )
    psub = await js_sub.pull_subscribe(
        subject,
        durable="raw",
        stream=stream,
        config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30, max_deliver=5),
    )
    data = json.dumps(PAYLOAD).encode()
    received: list[float] = []
    target = [n]
    done = asyncio.Event()

    async def consume() -> None:
        count = 0
        while True:
            try:
                msgs = await psub.fetch(64, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                json.loads(m.data)
                await m.ack()
                received.append(time.perf_counter())
                count += 1
                if count == target[0]:
                    done.set()

    task = asyncio.get_running_loop().create_task(consume())
    try:
        t0 = time.perf_counter()
        for i in range(n):
            data = json.dumps(PAYLOAD).encode()  # each event encoded, as Loom does
            await js_pub.publish(subject, data, headers={"Nats-Msg-Id": f"{stream}-{i}"})
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - t0
        lat: list[float] = []
        for i in range(latency_n):
            done.clear()
            target[0] = n + i + 1
            t = time.perf_counter()
            await js_pub.publish(subject, data, headers={"Nats-Msg-Id": f"{stream}-l{i}"})
            await asyncio.wait_for(done.wait(), 10)
            lat.append(received[-1] - t)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pub_nc.drain()
        await sub_nc.drain()
    return elapsed, lat


async def raw_core(url: str, n: int) -> float:
    pub_nc, sub_nc = await nats.connect(url), await nats.connect(url)
    done = asyncio.Event()
    count = 0

    async def cb(msg: Any) -> None:
        nonlocal count
        json.loads(msg.data)
        count += 1
        if count == n:
            done.set()

    await sub_nc.subscribe("bench.rawcore", cb=cb, pending_msgs_limit=n + 10)
    await sub_nc.flush()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            await pub_nc.publish("bench.rawcore", json.dumps(PAYLOAD).encode())
        await asyncio.wait_for(done.wait(), 120)
        return time.perf_counter() - t0
    finally:
        await pub_nc.drain()
        await sub_nc.drain()


async def best_of(rounds: int, sides: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, Any]:
    results: dict[str, list[Any]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(await sides[name]())
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI")
    parser.add_argument("--events", type=int, default=None)
    args = parser.parse_args()
    n = args.events or (200 if args.smoke else 5000)
    core_n = n * 10
    lat_n = 50 if args.smoke else 500
    rounds = 1 if args.smoke else 3

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_nats(Path(tmp) / "js")
        try:
            rel = await best_of(
                rounds,
                {
                    "loom": lambda: loom_reliable(url, n, lat_n),
                    "raw": lambda: raw_reliable(url, n, lat_n),
                },
            )
            core = await best_of(
                rounds,
                {"loom": lambda: loom_core(url, core_n), "raw": lambda: raw_core(url, core_n)},
            )
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    print(
        f"nats: nats-server -js (file storage), {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, best of {rounds}"
    )
    loom_t = min(t for t, _ in rel["loom"])
    raw_t = min(t for t, _ in rel["raw"])
    loom_lat = min((lat for _, lat in rel["loom"]), key=statistics.median)
    raw_lat = min((lat for _, lat in rel["raw"]), key=statistics.median)
    print(
        f"  reliable ({n} events, publish acked, handler then ack): "
        f"Loom {n / loom_t:8.0f}/s   raw nats-py JetStream {n / raw_t:8.0f}/s   "
        f"throughput ratio Loom/raw {raw_t / loom_t:.2f}x"
    )
    print(
        f"  reliable publish→handler latency ({lat_n}, one in flight): "
        f"Loom p50 {pct(loom_lat, 0.5) * 1e3:.2f} ms p99 {pct(loom_lat, 0.99) * 1e3:.2f} ms   "
        f"raw p50 {pct(raw_lat, 0.5) * 1e3:.2f} ms p99 {pct(raw_lat, 0.99) * 1e3:.2f} ms   "
        f"p50 ratio Loom/raw {pct(loom_lat, 0.5) / pct(raw_lat, 0.5):.2f}x"
    )
    lc, rc = min(core["loom"]), min(core["raw"])
    print(
        f"  core ({core_n} events, at most once): Loom bridge {core_n / lc:8.0f}/s   "
        f"raw nats-py {core_n / rc:8.0f}/s   throughput ratio Loom/raw {rc / lc:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())

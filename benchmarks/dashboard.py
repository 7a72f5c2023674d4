"""Dashboard benchmark: what an open dashboard costs the bus, same run, open vs closed.

The bus path is the bus benchmark's Loom path (``Agent`` + ``ctx.emit`` → one
subscriber's ``on_event``). "Open" means a page is connected to the dashboard's live
event stream: a separate process reads ``/api/events`` over HTTP, as a browser tab
would (its parsing does not run on the agents' loop; the server's work does). "Closed"
means the dashboard is serving but nobody listens.

Measures, interleaving closed and open rounds (best of N each):
  * throughput: events/s from the first publish until the handler saw every event;
  * paced at 100k events/s: CPU seconds the process spent per second of wall time.

Usage: python benchmarks/dashboard.py [--smoke] [--events N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from loom import Agent, Runtime
from loom.dashboard.server import Dashboard
from loom.dashboard.settings import DashboardSettings

READER = r"""
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
n = 0
with urllib.request.urlopen(req) as r:
    print("connected", flush=True)
    for line in r:
        n += line.startswith(b"data: ")
"""


class Bench:
    def __init__(self) -> None:
        self.seen = 0
        self.expected = 0
        self.done = asyncio.Event()

    async def setup(self, tmp: Path) -> None:
        self.rt = Runtime()

        async def on_event(ctx: Any, topic: str, e: Any) -> None:
            self.seen += 1
            if self.seen >= self.expected:
                self.done.set()

        sub = Agent(
            "sub", topics=["bench.topic"], on_event=on_event, runtime=self.rt, capacity=1 << 20
        )
        self.pub = Agent("pub", runtime=self.rt)
        await sub.start()
        await self.pub.start()
        self.board = Dashboard(DashboardSettings(), runtime=self.rt, trace_dir=tmp)
        await self.board.start()

    async def open_page(self) -> asyncio.subprocess.Process:
        token = self.board.url.split("token=", 1)[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            READER,
            self.board.base_url + "/api/events",
            token,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        assert line.strip() == b"connected", line
        stream = self.board._stream
        while stream is None or stream.listening == 0:  # noqa: ASYNC110 - polls server state
            await asyncio.sleep(0.01)
        return proc

    async def throughput(self, n: int) -> tuple[float, float]:
        """Events/s, and CPU µs of this process per event (less disturbed by other
        processes on the machine than wall time)."""
        self.seen, self.expected = 0, n
        self.done.clear()
        emit = self.pub.ctx.emit
        gc.collect()
        cpu0, start = time.process_time(), time.perf_counter()
        for _ in range(n):
            await emit("bench.topic", "tick", None)
        await self.done.wait()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        return n / wall, cpu / n * 1e6

    async def paced(self, rate: float, seconds: float) -> float:
        """CPU seconds per wall second while publishing ``rate`` events/s."""
        n = int(rate * seconds)
        self.seen, self.expected = 0, n
        self.done.clear()
        emit = self.pub.ctx.emit
        batch = 100  # publish in small bursts, then yield until the next one is due
        interval = batch / rate
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        next_at = wall0
        sent = 0
        while sent < n:
            for _ in range(batch):
                await emit("bench.topic", "tick", None)
            sent += batch
            next_at += interval
            delay = next_at - time.perf_counter()
            await asyncio.sleep(delay if delay > 0 else 0)
        await self.done.wait()
        return (time.process_time() - cpu0) / (time.perf_counter() - wall0)

    async def close(self) -> None:
        await self.board.stop()
        await self.rt.stop(timeout=2)


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="a few-second run for CI")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    n = args.events or (5_000 if args.smoke else 200_000)
    rounds = args.rounds or (1 if args.smoke else 5)
    seconds = 0.5 if args.smoke else 3.0
    rate = 100_000.0

    load = os.getloadavg()[0]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"
    )
    print(
        f"throughput: {n} events per round; paced: {rate:,.0f} events/s for {seconds}s; "
        f"best of {rounds}, closed and open interleaved; load {load:.1f}\n"
    )
    bench = Bench()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        await bench.setup(Path(tmp))
        results: dict[str, dict[str, list[float]]] = {
            "closed": {"tput": [], "us": [], "cpu": []},
            "open": {"tput": [], "us": [], "cpu": []},
        }
        try:
            for _ in range(rounds):
                for mode in ("closed", "open"):
                    page = await bench.open_page() if mode == "open" else None
                    try:
                        tput, us = await bench.throughput(n)
                        results[mode]["tput"].append(tput)
                        results[mode]["us"].append(us)
                        results[mode]["cpu"].append(await bench.paced(rate, seconds))
                    finally:
                        if page is not None:
                            page.kill()
                            await page.wait()
                    # The stream notices the page left and drops its bus subscription.
                    stream = bench.board._stream
                    while stream is not None and stream.observer_ids:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
        finally:
            await bench.close()
    closed_t, open_t = max(results["closed"]["tput"]), max(results["open"]["tput"])
    closed_c, open_c = min(results["closed"]["cpu"]), min(results["open"]["cpu"])
    closed_u, open_u = min(results["closed"]["us"]), min(results["open"]["us"])
    print(f"{'':36} {'page closed':>14} {'page open':>14} {'open/closed':>12}")
    print(
        f"{'throughput, events/s (best)':36} {closed_t:>14,.0f} {open_t:>14,.0f} "
        f"{open_t / closed_t:>11.3f}x"
    )
    print(
        f"{'CPU per event, µs (best)':36} {closed_u:>14.2f} {open_u:>14.2f} "
        f"{open_u / closed_u:>11.3f}x"
    )
    print(
        f"{'CPU at 100k events/s, s per s (best)':36} {closed_c:>14.3f} {open_c:>14.3f} "
        f"{open_c / closed_c:>11.3f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())

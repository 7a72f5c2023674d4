"""Remote tools benchmark: a tool called on a tool host over NATS vs the same tool called
locally, in one run, against a ``nats-server`` started here.

The host is another process (a ``Runtime`` with ``[tools] export = ["fs:*", "bench:*"]``
joined to NATS); the caller's runtime has the same tools itself, so each pair is the
same tool, same arguments, same sandbox:

1. ``ctx.tool("fs:read_file@benchhost", {"path": "small.txt"})`` vs
   ``ctx.tool("fs:read_file", ...)`` on the caller's own workspace (a 128-byte file);
2. a Python ``@tool`` (``async def`` returning its argument), remote vs local;
3. the floor: a raw nats-py ``request`` to an echo subscription in the host process
   (the same server, payload of the same size) — what NATS itself costs per round trip.

Latency: p50/p99 of sequential calls; throughput: calls/s with 16 concurrent callers.
Ratios are remote/local *time* (for throughput: local calls/s ÷ remote calls/s); there
is no goal — the point is the price of crossing a process boundary, and how much of it
is NATS (the floor row) rather than Loom. Rounds alternate the order; each figure is the
best over the rounds.

Usage: python benchmarks/remote_tools.py [--smoke] [--rounds R] [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _lib.calls import Best, Call, run
from _lib.nats_server import start_nats
from loom import Agent, Runtime
from loom.config import parse_project_config
from loom.nats import connect
from loom.nats.remote_tools import RemoteToolsClient
from loom.tools import tool

HOST = "benchhost"
SMALL = ("loom " * 128)[:128]

HOST_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from loom import Runtime
    from loom.config import parse_project_config
    from loom.nats import connect
    from loom.tools import tool

    async def echo(value: str) -> str:
        '''Returns its argument.

        Args:
            value: Anything.
        '''
        return value

    async def main() -> None:
        root = Path(sys.argv[1])
        project = parse_project_config((root / "loom.toml").read_text(), root / "loom.toml")
        rt = Runtime(project)
        (await rt.get_tools()).register(tool(name="bench:echo", register=False)(echo))
        await connect(rt, sys.argv[2], name="benchhost")
        nc = rt.tools.remote.nc  # the host's connection: the floor's echo shares it

        async def raw(msg):
            await nc.publish(msg.reply, msg.data)

        await nc.subscribe("bench.raw", cb=raw)
        await nc.flush()
        print("READY", flush=True)
        try:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        finally:
            await rt.stop(timeout=5)

    asyncio.run(main())
    """
)


# -- measuring -----------------------------------------------------------------------


@dataclass
class Pair:
    label: str
    remote: Call
    local: Call
    n: int
    concurrency: int = 1
    remote_best: Best = field(default_factory=Best)
    local_best: Best = field(default_factory=Best)

    async def round(self, remote_first: bool) -> None:
        order = [(self.remote, self.remote_best), (self.local, self.local_best)]
        for call, best in order if remote_first else order[::-1]:
            best.samples.append(await run(call, self.n, self.concurrency))


# -- set-up --------------------------------------------------------------------------


def project_dir(root: Path, export: bool) -> Path:
    root.mkdir()
    (root / "ws").mkdir()
    (root / "ws" / "small.txt").write_text(SMALL)
    extra = '[tools]\nexport = ["fs:*", "bench:*"]\n' if export else ""
    (root / "loom.toml").write_text(f'[workspace]\nroot = "ws"\n{extra}')
    return root


def start_host(root: Path, url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT, str(root), url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        sys.exit("the tool host did not start")
    return proc


async def _echo(value: str) -> str:
    """Returns its argument.

    Args:
        value: Anything.
    """
    return value


# -- the report ----------------------------------------------------------------------


def print_tables(lat: list[Pair], tput: list[Pair], floor: Best) -> None:
    print("Latency, sequential calls (µs; ratio = remote / local)\n")
    print("| tool | remote p50 | remote p99 | local p50 | local p99 | ratio p50 | ratio p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for p in lat:
        r, lo = p.remote_best, p.local_best
        print(
            f"| {p.label} | {r.p50_us:.1f} | {r.p99_us:.1f} | {lo.p50_us:.1f} | {lo.p99_us:.1f}"
            f" | {r.p50_us / lo.p50_us:.2f}x | {r.p99_us / lo.p99_us:.2f}x |"
        )
    print(
        f"| floor: raw nats-py request/reply, same server | {floor.p50_us:.1f} "
        f"| {floor.p99_us:.1f} | — | — | — | — |"
    )
    print("\nThroughput (calls/s; ratio = local calls/s / remote calls/s, i.e. time per call)\n")
    print("| tool | remote | local | ratio |")
    print("|---|---:|---:|---:|")
    for p in tput:
        r, lo = p.remote_best, p.local_best
        print(f"| {p.label} | {r.per_s:,.0f} | {lo.per_s:,.0f} | {lo.per_s / r.per_s:.2f}x |")
    extra = lat[0].remote_best.p50_us - floor.p50_us
    print(
        f"\nfs:read_file remote p50 minus the NATS floor: {extra:.1f} µs "
        "(Loom's work on both sides: JSON, the two registries, the host's task)"
    )


# -- main ----------------------------------------------------------------------------


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="a few-second run for CI")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per case (best of)")
    ap.add_argument("--calls", type=int, default=None, help="calls per round and case")
    args = ap.parse_args()
    calls = args.calls or (100 if args.smoke else 3000)
    rounds = args.rounds or (1 if args.smoke else 5)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
    if hasattr(os, "getloadavg"):
        print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"calls per round: {calls}; best of {rounds} rounds\n")

    server, url = start_nats()
    with tempfile.TemporaryDirectory(prefix="loom-bench-remote-") as tmpdir:
        tmp = Path(tmpdir)
        host = start_host(project_dir(tmp / "host", export=True), url)
        mine = project_dir(tmp / "caller", export=False)
        project = parse_project_config((mine / "loom.toml").read_text(), mine / "loom.toml")
        rt = Runtime(project)
        try:
            registry = await rt.get_tools()
            registry.register(tool(name="bench:echo", register=False)(_echo))
            await connect(rt, url, name="benchcaller")
            agent = Agent("bench", runtime=rt)
            await agent.start()
            ctx = agent.ctx
            remote = registry.remote
            assert isinstance(remote, RemoteToolsClient)
            nc = remote.nc  # the caller's NATS connection, for the floor

            for name in ("fs:read_file", f"fs:read_file@{HOST}"):
                got = await ctx.tool(name, {"path": "small.txt"})
                if got["content"] != SMALL:
                    raise RuntimeError(f"{name} did not return the file")
            if await ctx.tool(f"bench:echo@{HOST}", {"value": "hi"}) != "hi":
                raise RuntimeError("bench:echo on the host did not answer")

            def read(name: str) -> Call:
                return lambda: ctx.tool(name, {"path": "small.txt"})

            def echo(name: str) -> Call:
                return lambda: ctx.tool(name, {"value": "hi"})

            raw_body = b'{"v":1,"args":{"path":"small.txt"},"timeout":30.0}'

            async def raw() -> Any:
                return await nc.request("bench.raw", raw_body, timeout=5)

            lat = [
                Pair(
                    "fs:read_file 128 B", read(f"fs:read_file@{HOST}"), read("fs:read_file"), calls
                ),
                Pair("@tool async echo", echo(f"bench:echo@{HOST}"), echo("bench:echo"), calls),
            ]
            tput = [
                Pair(
                    "fs:read_file 128 B, 16 concurrent",
                    read(f"fs:read_file@{HOST}"),
                    read("fs:read_file"),
                    calls,
                    16,
                ),
            ]
            floor = Best()
            warm = max(calls // 10, 20)
            for p in lat + tput:
                await run(p.remote, warm, p.concurrency)
                await run(p.local, warm, p.concurrency)
            await run(raw, warm)
            for r in range(rounds):
                for p in lat + tput:
                    await p.round(remote_first=r % 2 == 0)
                floor.samples.append(await run(raw, calls))
            print_tables(lat, tput, floor)
        finally:
            await rt.stop(timeout=5)
            if host.stdin is not None:
                host.stdin.close()
            try:
                host.wait(timeout=15)
            except subprocess.TimeoutExpired:
                host.kill()
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())

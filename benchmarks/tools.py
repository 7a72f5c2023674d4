"""Tools benchmark: Loom's tool calls vs the plain-asyncio way of doing the same, one run.

Every figure is a ratio of two measurements taken in the same process, in alternating
order round by round (loom first, then the baseline first, and so on), so a
busy machine slows both sides alike.

1. ``await ctx.tool("fs:read_file", {"path": ...})`` (path resolved beneath the
   workspace with ``openat2(RESOLVE_BENEATH)`` in Rust, on a worker thread without the
   GIL, the result handed back to the loop) vs ``await asyncio.to_thread(Path.read_text)``
   on the same file, a small one and a 64 KiB one: p50/p99 latency of sequential calls,
   and calls/s with 16 concurrent callers. Goal: ≤ 1.0x.
2. ``system:shell`` with argv ``["true"]`` (Landlock, seccomp, pid namespace, rlimits,
   captured output, as the result's ``sandbox`` field reports) vs
   ``asyncio.create_subprocess_exec("true")`` + ``wait()``: p50/p99 latency, sequential
   and 8 concurrent callers. Goal: ≤ 1.3x. An extra, goal-less row gives the baseline
   with stdout/stderr piped and read (``communicate()``), which is what the tool does too.
3. A Python ``@tool`` (an ``async def`` returning its argument) through ``ctx.tool`` vs
   awaiting the function itself: p50 per call and the difference (the overhead), with no
   tracer provider and with an SDK provider + in-memory exporter installed.

Ratios are always loom/baseline *time*: for throughput that is baseline calls/s ÷ loom
calls/s, so ≤ 1.0x means "as fast or faster" everywhere. Each figure is the best over
the rounds (lowest p50, lowest p99, highest calls/s, each on its own).

Usage: python benchmarks/tools.py [--smoke] [--rounds R] [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _lib.calls import Best, Call, run
from loom import Agent, Runtime, _core
from loom.config import parse_project_config
from loom.tools import tool

SMALL_BYTES = 128
LARGE_BYTES = 64 * 1024


# -- measuring -----------------------------------------------------------------------


@dataclass
class Pair:
    """Loom vs its baseline for one measurement."""

    label: str
    goal: float | None
    loom: Call
    base: Call
    n: int
    concurrency: int = 1
    loom_best: Best = field(default_factory=Best)
    base_best: Best = field(default_factory=Best)

    async def round(self, loom_first: bool) -> None:
        order = [(self.loom, self.loom_best), (self.base, self.base_best)]
        for call, best in order if loom_first else order[::-1]:
            best.samples.append(await run(call, self.n, self.concurrency))


# -- the project ---------------------------------------------------------------------


async def start_agent(tmp: Path) -> tuple[Runtime, Agent, Path]:
    """A runtime with native tools confined to ``tmp/ws`` (as tests/test_tools_native.py)."""
    (tmp / "loom.toml").write_text('[workspace]\nroot = "ws"\n')
    project = parse_project_config((tmp / "loom.toml").read_text(), tmp / "loom.toml")
    rt = Runtime(project)
    agent = Agent("bench", runtime=rt)
    await agent.start()
    ws = tmp / "ws"
    ws.mkdir(exist_ok=True)
    return rt, agent, ws


async def _echo(value: str) -> str:
    """Returns its argument.

    Args:
        value: Anything.
    """
    return value


ECHO = tool(name="bench:echo", register=False)(_echo)


@contextmanager
def sdk_tracing() -> Iterator[Any]:
    """Installs an SDK tracer provider with an in-memory exporter for the block, then
    puts the previous one back (the swap tests/conftest.py and OpenTelemetry's own test
    utilities do: the API lets a provider be set only once per process)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    from loom.telemetry import refresh_tracing_active

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    if not refresh_tracing_active():
        raise RuntimeError("the SDK tracer provider was not picked up")
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
        refresh_tracing_active()


# -- the report ----------------------------------------------------------------------


def ratio_cell(ratio: float, goal: float | None) -> str:
    if goal is None:
        return f"{ratio:.2f}x"
    return f"{ratio:.2f}x {'✓' if ratio <= goal else '✗'}"


def print_tables(
    lat: list[Pair], tput: list[Pair], py_rows: list[tuple[str, Best, float]], sandbox: str
) -> None:
    print("Latency (µs; ratio = loom / baseline)\n")
    print(
        "| measurement | loom p50 | loom p99 | baseline p50 | baseline p99 "
        "| ratio p50 | ratio p99 | goal |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for p in lat:
        lb, bb = p.loom_best, p.base_best
        goal = f"≤ {p.goal}x" if p.goal else "—"
        print(
            f"| {p.label} | {lb.p50_us:.1f} | {lb.p99_us:.1f} | {bb.p50_us:.1f} | {bb.p99_us:.1f}"
            f" | {ratio_cell(lb.p50_us / bb.p50_us, p.goal)}"
            f" | {ratio_cell(lb.p99_us / bb.p99_us, p.goal)} | {goal} |"
        )
    print("\nThroughput (calls/s; ratio = baseline calls/s / loom calls/s, i.e. time per call)\n")
    print("| measurement | loom | baseline | ratio | goal |")
    print("|---|---:|---:|---:|---:|")
    for p in tput:
        lb, bb = p.loom_best, p.base_best
        goal = f"≤ {p.goal}x" if p.goal else "—"
        print(
            f"| {p.label} | {lb.per_s:,.0f} | {bb.per_s:,.0f}"
            f" | {ratio_cell(bb.per_s / lb.per_s, p.goal)} | {goal} |"
        )
    print(f"\nsystem:shell sandbox, as reported by the result: {sandbox}")
    print("\nPython @tool (async def returning its argument), p50 µs per call\n")
    print("| call | p50 | overhead vs direct await |")
    print("|---|---:|---:|")
    direct = py_rows[0][1].p50_us
    for label, best, spans in py_rows:
        extra = f" ({spans:.0f} spans/call)" if spans else ""
        over = "—" if best is py_rows[0][1] else f"+{best.p50_us - direct:.1f}"
        print(f"| {label}{extra} | {best.p50_us:.1f} | {over} |")


def describe_sandbox(sb: dict[str, Any]) -> str:
    landlock = sb.get("landlock", "?")
    if sb.get("landlock_abi"):
        landlock += f" (ABI {sb['landlock_abi']})"
    return (
        f"Landlock {landlock}, seccomp {sb.get('seccomp')}, "
        f"pid namespace {sb.get('pid_namespace')}, no_new_privs {sb.get('no_new_privs')}, "
        f"process limit {sb.get('process_limit')}, network {sb.get('network')}"
    )


# -- main ----------------------------------------------------------------------------


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="a few-second run for CI")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per case (best of)")
    ap.add_argument(
        "--calls",
        type=int,
        default=None,
        help="calls per round for fs and @tool cases (system:shell: a tenth)",
    )
    args = ap.parse_args()
    calls = args.calls or (200 if args.smoke else 5000)
    rounds = args.rounds or (1 if args.smoke else 5)
    shell_calls = max(calls // 10, 16)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
    if hasattr(os, "getloadavg"):
        print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    built = time.gmtime(os.stat(_core.__file__).st_mtime)
    print(f"loom._core built {time.strftime('%Y-%m-%d %H:%M:%S', built)} UTC")
    print(f"calls per round: {calls} (fs, @tool), {shell_calls} (shell); best of {rounds} rounds\n")

    with tempfile.TemporaryDirectory(prefix="loom-bench-tools-") as tmpdir:
        rt, agent, ws = await start_agent(Path(tmpdir))
        try:
            ctx = agent.ctx
            registry = await rt.get_tools()
            registry.register(ECHO)

            small, large = ws / "small.txt", ws / "large.txt"
            small.write_text(("loom " * SMALL_BYTES)[:SMALL_BYTES])
            large.write_text(
                (("lorem ipsum dolor sit amet " * 3)[:63] + "\n") * (LARGE_BYTES // 64)
            )
            for f in (small, large):
                got = await ctx.tool("fs:read_file", {"path": f.name})
                if got["content"] != f.read_text() or not got["eof"]:
                    raise RuntimeError(f"fs:read_file did not return all of {f.name}")
            shell = await ctx.tool("system:shell", {"argv": ["true"]})
            if shell["exit_code"] != 0:
                raise RuntimeError(f"system:shell true failed: {shell}")
            sandbox = describe_sandbox(shell["sandbox"])

            def loom_read(name: str) -> Call:
                return lambda: ctx.tool("fs:read_file", {"path": name})

            def base_read(path: Path) -> Call:
                return lambda: asyncio.to_thread(path.read_text)

            async def loom_true() -> Any:
                return await ctx.tool("system:shell", {"argv": ["true"]})

            async def base_true() -> int:
                proc = await asyncio.create_subprocess_exec("true")
                return await proc.wait()

            async def base_true_piped() -> Any:
                proc = await asyncio.create_subprocess_exec(
                    "true",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                return await proc.communicate()

            small_label = f"fs:read_file {SMALL_BYTES} B"
            large_label = f"fs:read_file {LARGE_BYTES // 1024} KiB"
            lat = [
                Pair(
                    f"{small_label}, sequential",
                    1.0,
                    loom_read(small.name),
                    base_read(small),
                    calls,
                ),
                Pair(
                    f"{large_label}, sequential",
                    1.0,
                    loom_read(large.name),
                    base_read(large),
                    calls,
                ),
                Pair("system:shell `true`, sequential", 1.3, loom_true, base_true, shell_calls),
                Pair(
                    "system:shell `true`, 8 concurrent", 1.3, loom_true, base_true, shell_calls, 8
                ),
                Pair(
                    "system:shell `true`, sequential, vs piped baseline",
                    None,
                    loom_true,
                    base_true_piped,
                    shell_calls,
                ),
            ]
            tput = [
                Pair(
                    f"{small_label}, 16 concurrent",
                    1.0,
                    loom_read(small.name),
                    base_read(small),
                    calls,
                    16,
                ),
                Pair(
                    f"{large_label}, 16 concurrent",
                    1.0,
                    loom_read(large.name),
                    base_read(large),
                    calls,
                    16,
                ),
            ]

            async def direct() -> Any:
                return await _echo("hi")

            async def through_ctx() -> Any:
                return await ctx.tool("bench:echo", {"value": "hi"})

            py_direct, py_off, py_on, fs_off, fs_on = Best(), Best(), Best(), Best(), Best()
            spans_per_call = {"echo": 0.0, "fs": 0.0}

            # Warm-up: every code path once at the round's size (imports, caches,
            # worker threads, the executor's threads, the page cache).
            warm = max(calls // 10, 20)
            for p in lat + tput:
                await run(p.loom, min(warm, p.n), p.concurrency)
                await run(p.base, min(warm, p.n), p.concurrency)
            for call in (direct, through_ctx):
                await run(call, warm)
            with sdk_tracing():
                await run(through_ctx, warm)
                await run(loom_read(small.name), warm)

            for r in range(rounds):
                loom_first = r % 2 == 0
                for p in lat + tput:
                    await p.round(loom_first)
                py_direct.samples.append(await run(direct, calls))
                py_off.samples.append(await run(through_ctx, calls))
                fs_off.samples.append(await run(loom_read(small.name), calls))
                with sdk_tracing() as exporter:
                    py_on.samples.append(await run(through_ctx, calls))
                    spans_per_call["echo"] = len(exporter.get_finished_spans()) / calls
                    exporter.clear()
                    fs_on.samples.append(await run(loom_read(small.name), calls))
                    spans_per_call["fs"] = len(exporter.get_finished_spans()) / calls

            tput.append(lat[3])  # the shell's 8 concurrent callers: calls/s too
            py_rows = [
                ("direct `await fn(...)`", py_direct, 0.0),
                ("`ctx.tool`, no tracer provider", py_off, 0.0),
                ("`ctx.tool`, SDK provider + in-memory exporter", py_on, spans_per_call["echo"]),
            ]
            print_tables(lat, tput, py_rows, sandbox)
            print(
                f"\nfs:read_file {SMALL_BYTES} B through ctx.tool, p50: {fs_off.p50_us:.1f} µs "
                f"without a tracer provider, {fs_on.p50_us:.1f} µs with the SDK one "
                f"({spans_per_call['fs']:.0f} spans/call: execute_tool + the sandbox's own)"
            )
        finally:
            await rt.stop(timeout=5)
    if hasattr(os, "getloadavg"):
        print("\nload average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    asyncio.run(main())

"""What journaling costs: the same agent run with durability off, on SQLite and on
JetStream (the nats store), in one run.

Each run: a client's request reaches a worker agent, which makes one LLM call
(``LLMProvider`` against a canned OpenAI-compatible server in another process, answering
after ``--latency`` ms), one tool call (a Python ``@tool``) and replies — three journaled
steps, plus the run's own record (started, finished). Runs go one after another (the
worst case: nothing overlaps the journal's writes).

*off*: no ``[durability]``, today's behaviour. *sqlite*: ``[durability] store = "sqlite"``
(WAL, synchronous=NORMAL: every write survives kill -9). *nats*: ``store = "nats"`` on a
local ``nats-server -js`` (file storage), skipped when nats-server is not installed.

Reported per arm and model latency: wall time per run (best of R), the ratio to *off*,
and the journaling cost per step in µs ((arm - off) / steps).

Usage: python benchmarks/durability.py [--smoke] [--runs N] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _lib.nats_server import start_nats
from loom import Agent, Runtime
from loom.config import parse_project_config
from loom.llm import LLMProvider
from loom.tools import tool

STEPS_PER_RUN = 3  # llm, tool, reply


@tool(name="calc:add", register=False)
async def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


# -- the canned model server (a separate process) ----------------------------------------


def serve(port: int, latency_ms: float) -> None:
    body = json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "model": "canned",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "5"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    ).encode()
    response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if latency_ms:
                    await asyncio.sleep(latency_ms / 1000)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_model(latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--latency", str(latency_ms)]
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the canned model server did not start")


# -- one arm ------------------------------------------------------------------------------


def project_text(base_url: str, store: str | None, nats_url: str | None) -> str:
    text = f'[project]\nname = "bench"\n\n[llm.canned]\nbase_url = "{base_url}"\nmodel = "m"\n'
    if nats_url:
        text += f'\n[bus]\nnats = "{nats_url}"\n\n[bus.jetstream]\nenabled = true\n'
    if store:
        text += f'\n[durability]\nstore = "{store}"\nretention_days = 0\n'
    return text


async def arm(root: Path, base_url: str, store: str | None, nats_url: str | None, runs: int
              ) -> float:  # fmt: skip
    """Seconds per run, for ``runs`` runs one after another on a fresh runtime."""
    (root / "loom.toml").write_text(project_text(base_url, store, nats_url))
    project = parse_project_config((root / "loom.toml").read_text(), root / "loom.toml")
    runtime = Runtime(project)

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        llm = ctx.config["llm"]
        resp = await llm.call(messages=[{"role": "user", "content": event.payload}])
        result = await ctx.tool("calc:add", {"a": 2, "b": int(resp.content)})
        await ctx.reply(event, payload=result)

    worker = Agent("worker", topics=["bench.task"], tools=[add], on_event=on_event,
                   runtime=runtime, qos="realtime")  # fmt: skip
    await worker.start()
    worker.ctx.config = {"llm": LLMProvider.from_name(worker.ctx, "canned")}
    client = Agent("client", runtime=runtime)
    await client.start()
    for i in range(3):  # warm-up: connections, the journal's thread and tables
        await client.ctx.request("bench.task", payload=f"warm {i}", timeout=30)
    t0 = time.perf_counter()
    for i in range(runs):
        reply = await client.ctx.request("bench.task", payload=f"task {i}", timeout=30)
        assert reply.payload == 7, reply.payload
    elapsed = time.perf_counter() - t0
    await runtime.stop(timeout=5)
    return elapsed / runs


async def measure(latency_ms: float, runs: int, repeat: int, nats_url: str | None
                  ) -> dict[str, float]:  # fmt: skip
    proc, base_url = start_model(latency_ms)
    arms: list[tuple[str, str | None, str | None]] = [("off", None, None),
                                                      ("sqlite", "sqlite", None)]  # fmt: skip
    if nats_url:
        arms.append(("nats", "nats", nats_url))
    best: dict[str, float] = {}
    try:
        for _ in range(repeat):
            for name, store, url in arms:  # interleaved, so drift hits every arm
                with tempfile.TemporaryDirectory() as tmp:
                    t = await arm(Path(tmp), base_url, store, url, runs)
                best[name] = min(best.get(name, t), t)
    finally:
        proc.kill()
        proc.wait()
    return best


def nats_store_available() -> bool:
    try:
        import loom.durable.nats_store  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds, for CI")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--latency", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.latency)
        return 0
    runs, repeat = (20, 1) if args.smoke else (args.runs, args.repeat)
    server: subprocess.Popen[bytes] | None = None
    nats_url: str | None = None
    if shutil.which("nats-server") and nats_store_available():
        server, nats_url = start_nats(Path(tempfile.mkdtemp(prefix="loom-bench-js-")))
    else:
        print("nats-server or the nats store is not available: the nats arm is skipped")
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, load "
          f"{os.getloadavg()[0]:.2f}; {runs} runs x {STEPS_PER_RUN} journaled steps, "
          f"best of {repeat}")  # fmt: skip
    try:
        print(f"{'model latency':>14} {'arm':>7} {'ms/run':>9} {'vs off':>8} {'µs/step':>9}")
        for latency in (0.0, 20.0):
            best = asyncio.run(measure(latency, runs, repeat, nats_url))
            off = best["off"]
            for name, t in best.items():
                per_step = (t - off) / STEPS_PER_RUN * 1e6
                print(f"{latency:>11.0f} ms {name:>7} {t * 1000:>9.3f} {t / off:>7.3f}x "
                      f"{per_step if name != 'off' else 0:>9.0f}")  # fmt: skip
    finally:
        if server is not None:
            server.kill()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

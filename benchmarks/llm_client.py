"""Benchmark: loom.llm vs the openai SDK vs raw httpx, against a canned local endpoint.

Starts its own OpenAI-compatible canned-response server in a separate process (an
asyncio protocol that answers in microseconds, so the clients are what is measured),
then for each client and concurrency 1/16/64 measures requests/s and p50 latency of
``chat.completions``; streaming 50-chunk responses/s; and ``import loom`` vs
``import openai`` time. Prints ratios against the goals of issue 4.

    python benchmarks/llm_client.py            # full run (~2-3 min)
    python benchmarks/llm_client.py --smoke    # a few seconds, for CI
    python benchmarks/llm_client.py --local    # also the real SmolLM2 server

Needs: openai (with aiohttp extra), httpx-aiohttp. On a 2-core box, the server is
pinned to one core and the clients to the other when the OS allows it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

STREAM_CHUNKS = 50

# -- the canned server (runs in its own process) ---------------------------------------------


def _canned() -> tuple[bytes, bytes]:
    body = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello there!"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        }
    ).encode()
    plain = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    events = []
    for i in range(STREAM_CHUNKS):
        c = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "bench",
            "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
        }
        events.append(b"data: " + json.dumps(c).encode() + b"\n\n")
    fin = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 50, "total_tokens": 59},
    }
    events.append(b"data: " + json.dumps(fin).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    # Chunked, one HTTP chunk per event, as real servers send them.
    chunked = b"".join(f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in events) + b"0\r\n\r\n"
    stream = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + chunked
    )
    return plain, stream


class _Proto(asyncio.Protocol):
    PLAIN, STREAM = _canned()

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            i = head.find(b"content-length:")
            if i >= 0:
                length = int(
                    head[
                        i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None
                    ].strip()
                )
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body = self.buf[end + 4 : total]
            self.buf = self.buf[total:]
            if head.startswith(b"get"):
                self.t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            elif b'"stream":true' in body.replace(b" ", b""):
                self.t.write(self.STREAM)
            else:
                self.t.write(self.PLAIN)


def serve(port: int) -> None:
    """Run the canned server (child process)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Proto, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("canned server did not start")


# -- clients -----------------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "Say hello."}]
Call = Callable[[], Awaitable[Any]]


async def make_clients(base: str, which: set[str]) -> dict[str, tuple[Call, Call, Any]]:
    """name -> (call, stream, closer)."""
    out: dict[str, tuple[Call, Call, Any]] = {}
    url = base + "/chat/completions"
    payload = {"model": "bench", "messages": MESSAGES}

    if "loom" in which or "loom-httpx" in which:
        from loom.llm import LLMConfig, LLMProvider

        for name, transport in (("loom", "auto"), ("loom-httpx", "httpx")):
            if name not in which:
                continue
            llm = LLMProvider(
                None,
                LLMConfig(
                    name="bench",
                    base_url=base,
                    model="bench",
                    api_key="sk-bench",
                    transport=transport,
                    quirks="openai",
                    max_retries=0,
                ),
            )

            async def call(llm: Any = llm) -> Any:
                return (await llm.call(MESSAGES)).content

            async def stream(llm: Any = llm) -> Any:
                n = 0
                async for _ in llm.stream(MESSAGES):
                    n += 1
                return n

            out[name] = (call, stream, llm.aclose)

    if "openai" in which or "openai-aiohttp" in which:
        import openai

        for name, http_client in (("openai", None), ("openai-aiohttp", "aio")):
            if name not in which:
                continue
            kwargs: dict[str, Any] = {"base_url": base, "api_key": "sk-bench", "max_retries": 0}
            if http_client:
                kwargs["http_client"] = openai.DefaultAioHttpClient()
            client = openai.AsyncOpenAI(**kwargs)

            async def ocall(client: Any = client) -> Any:
                r = await client.chat.completions.create(model="bench", messages=MESSAGES)
                return r.choices[0].message.content

            async def ostream(client: Any = client) -> Any:
                n = 0
                s = await client.chat.completions.create(
                    model="bench", messages=MESSAGES, stream=True
                )
                async for _ in s:
                    n += 1
                return n

            out[name] = (ocall, ostream, client.close)

    if "httpx" in which or "httpx-aiohttp" in which:
        import httpx

        for name in ("httpx", "httpx-aiohttp"):
            if name not in which:
                continue
            transport = None
            if name == "httpx-aiohttp":
                from httpx_aiohttp import AiohttpTransport

                transport = AiohttpTransport()
            hc = httpx.AsyncClient(
                transport=transport, timeout=30, limits=httpx.Limits(max_connections=256)
            )

            async def hcall(hc: Any = hc) -> Any:
                r = await hc.post(url, json=payload)
                return r.json()["choices"][0]["message"]["content"]

            async def hstream(hc: Any = hc) -> Any:
                n = 0
                async with hc.stream("POST", url, json={**payload, "stream": True}) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            json.loads(line[6:])
                            n += 1
                return n

            out[name] = (hcall, hstream, hc.aclose)
    return out


async def measure(fn: Call, concurrency: int, seconds: float) -> tuple[float, float]:
    """(requests/s, p50 latency ms) for ``seconds`` of ``concurrency`` workers."""
    for _ in range(min(concurrency, 8)):  # warm the pool
        await fn()
    await asyncio.gather(*[fn() for _ in range(concurrency)])
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await fn()
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - t0
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


def import_time(module: str, runs: int) -> float:
    code = (
        f"import sys,time; sys.path.insert(0, {str(ROOT / 'python')!r}); "
        f"t=time.perf_counter(); import {module}; print(time.perf_counter()-t)"
    )
    times = []
    for _ in range(runs):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(float(r.stdout.strip().splitlines()[-1]))
    return min(times)


async def run(args: argparse.Namespace, base: str) -> dict[str, Any]:
    names = ["loom", "loom-httpx", "openai", "openai-aiohttp", "httpx", "httpx-aiohttp"]
    missing = [m for m in ("openai", "aiohttp", "httpx_aiohttp") if not importlib.util.find_spec(m)]
    if missing:
        # Still measure what can be measured; the ratios print n/a for the rest.
        print(f"not installed: {', '.join(missing)} (pip install -e '.[dev]')")
        if "openai" in missing or "aiohttp" in missing:
            names = [n for n in names if not n.startswith("openai")]
        if "httpx_aiohttp" in missing:
            names = [n for n in names if n != "httpx-aiohttp"]
    clients = await make_clients(base, set(names))
    levels = [1, 16] if args.smoke else [1, 16, 64]
    seconds = 0.4 if args.smoke else args.seconds
    results: dict[str, Any] = {"calls": {}, "stream": {}}
    print(
        f"{'client':<16}" + "".join(f"{'c=' + str(c):>20}" for c in levels) + f"{'stream c=16':>16}"
    )
    for name in names:
        call, stream, _ = clients[name]
        row = f"{name:<16}"
        for c in levels:
            rps, p50 = await measure(call, c, seconds)
            results["calls"][(name, c)] = (rps, p50)
            row += f"{rps:>9.0f} r/s {p50:>6.2f}ms"
        srps, sp50 = await measure(stream, 16, seconds)
        results["stream"][name] = (srps, sp50)
        row += f"{srps:>12.0f} r/s"
        print(row, flush=True)
    for _, _, close in clients.values():
        await close()
    return results


async def bench_local(runs: int) -> None:
    """Time to first chunk and tokens/s of the real SmolLM2 server, through loom.llm."""
    from loom.llm import LLMConfig, LLMProvider, LocalModelServer, TextDelta
    from loom.llm.local_server import unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"local model: skipped ({reason})")
        return
    t0 = time.perf_counter()
    async with LocalModelServer("smollm2") as server:
        ready = time.perf_counter() - t0
        llm = LLMProvider(
            None,
            LLMConfig(
                base_url=server.base_url, model=server.model, max_tokens=64, quirks="llamacpp"
            ),
        )
        ttfc, rates = [], []
        for i in range(runs):
            start = time.perf_counter()
            first = None
            n = 0
            async for ev in llm.stream_events([{"role": "user", "content": f"Tell a story #{i}"}]):
                if isinstance(ev, TextDelta):
                    n += 1
                    if first is None:
                        first = time.perf_counter() - start
            total = time.perf_counter() - start
            ttfc.append(first or total)
            rates.append(n / max(total - (first or 0), 1e-9))
        await llm.aclose()
    print(
        f"local SmolLM2-135M: ready in {ready:.1f}s, first chunk p50 "
        f"{statistics.median(ttfc) * 1000:.0f} ms, {statistics.median(rates):.0f} chunks/s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds, for CI")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per cell")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument(
        "--local", action="store_true", help="also time the real SmolLM2 server (llama.cpp)"
    )
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    proc, base = start_server()
    try:
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(0, {0})
        print(
            f"canned server {base} (pid {proc.pid}); python {sys.version.split()[0]}, "
            f"{os.cpu_count()} cores\n"
        )
        results = asyncio.run(run(args, base))
    finally:
        proc.terminate()
        proc.wait(5)
    runs = 2 if args.smoke else 5
    t_loom = import_time("loom", runs)
    t_llm = import_time("loom.llm", runs)
    t_openai = import_time("openai", runs) if importlib.util.find_spec("openai") else float("nan")
    print(
        f"\nimport loom {t_loom:.3f}s   import loom.llm {t_llm:.3f}s   "
        f"import openai {t_openai:.3f}s"
    )
    calls = results["calls"]

    def ratio(a: str, b: str, c: int) -> str:
        if (b, c) not in calls:
            return "  n/a"
        return f"{calls[(a, c)][0] / calls[(b, c)][0]:5.2f}"

    def sratio(b: str) -> str:
        st = results["stream"]
        return f"{st['loom'][0] / st[b][0]:5.2f}" if b in st else "  n/a"

    print("\nratios (requests/s, loom / other):")
    for c in sorted({c for _, c in calls}):
        print(
            f"  c={c:<3} vs openai {ratio('loom', 'openai', c)}x (goal 2.5x)   "
            f"vs openai-aiohttp {ratio('loom', 'openai-aiohttp', c)}x (goal 1.5x)   "
            f"vs httpx {ratio('loom', 'httpx', c)}x   "
            f"vs httpx-aiohttp {ratio('loom', 'httpx-aiohttp', c)}x"
        )
    print(
        f"  stream vs openai {sratio('openai')}x (goal 5x)   "
        f"vs openai-aiohttp {sratio('openai-aiohttp')}x"
    )
    print(f"  import loom {t_loom:.3f}s (goal <= 0.3s)")
    if args.local:
        print()
        asyncio.run(bench_local(3 if args.smoke else 8))


if __name__ == "__main__":
    main()

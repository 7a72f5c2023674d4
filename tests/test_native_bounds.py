"""Calls into the Rust core can neither crash the process nor outlive their timeout.

Depth bombs: a payload nested far deeper than ``loom._core.MAX_JSON_DEPTH`` (a dict
10 000 deep, a list 200 000 deep, a list that contains itself) used to overflow the
stack of the core's conversion and kill the interpreter with SIGSEGV. The crash cases
run in a subprocess, so a regression fails the test instead of killing the suite.

Hangs: an ``fs:search`` glob that backtracked exponentially ran far past its timeout
and kept a worker thread busy after ``ctx.tool`` had given up on it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from loom import Agent, LoomError, Runtime, ToolArgumentsInvalid, _core
from loom.config import parse_project_config

# Builds the bombs iteratively (a recursive builder would hit Python's own limit).
_NEST = """
def nest(kind, n):
    if kind == "self":
        x = []
        x.append(x)
        return {"path": x}
    if kind == "dict":
        d = {}
        cur = d
        for _ in range(n):
            cur["a"] = {}
            cur = cur["a"]
        return d
    if kind == "tuple":
        t = "x"
        for _ in range(n):
            t = (t,)
        return {"path": t}
    top = []
    cur = top
    for _ in range(n):
        nxt = []
        cur.append(nxt)
        cur = nxt
    return {"path": top}
"""

_CTX_TOOL = (
    _NEST
    + """
import asyncio, sys
from pathlib import Path
from loom import Agent, LoomError, Runtime
from loom.config import parse_project_config

async def main(kind, n, where):
    toml = Path(where) / "loom.toml"
    rt = Runtime(parse_project_config(toml.read_text(), toml))
    agent = Agent("w", runtime=rt)
    await agent.start()
    try:
        await agent.ctx.tool("fs:read_file", nest(kind, n))
    except LoomError as exc:
        print("LoomError", type(exc).__name__, exc)
    # The process is still fine: an ordinary call works.
    print("after", (await agent.ctx.tool("fs:read_file", {"path": "notes.md"}))["content"])
    await rt.stop(timeout=5)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""
)


def _project(tmp_path: Path) -> Path:
    (tmp_path / "loom.toml").write_text('[workspace]\nroot = "ws"\n')
    (tmp_path / "ws").mkdir(exist_ok=True)
    (tmp_path / "ws" / "notes.md").write_text("hello")
    return tmp_path


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )


@pytest.mark.parametrize(
    ("kind", "levels"),
    [("dict", 10_000), ("dict", 100_000), ("list", 200_000), ("tuple", 50_000), ("self", 0)],
)
def test_a_depth_bomb_through_ctx_tool_is_a_loom_error(
    tmp_path: Path, kind: str, levels: int
) -> None:
    proc = _run(_CTX_TOOL, kind, str(levels), str(_project(tmp_path)))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("LoomError ToolArgumentsInvalid "), proc.stdout
    assert f"nested deeper than {_core.MAX_JSON_DEPTH} levels" in lines[0]
    assert lines[1] == "after hello"


def test_a_depth_bomb_through_call_sync_and_json_text(tmp_path: Path) -> None:
    code = _NEST + textwrap.dedent(
        """
            import json, sys
            from loom import _core
            tools = _core.NativeTools(json.dumps({"workspace": {"root": sys.argv[1]}}))
            for payload in (nest("list", 200_000), nest("dict", 10_000),
                            '{"path": ' + "[" * 100_000 + "]" * 100_000 + "}"):
                result, error, _ = tools.call_sync("fs:read_file", payload)
                print(type(error).__name__, result)
            """
    )
    proc = _run(code, str(_project(tmp_path) / "ws"))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert proc.stdout.splitlines() == ["ToolArgumentsInvalid None"] * 3


def test_a_depth_bomb_on_the_bus_is_delivered_by_reference(tmp_path: Path) -> None:
    # In-process events are passed by reference (never converted by the core): a deep
    # payload arrives as the same object, and nothing crashes.
    code = _NEST + textwrap.dedent(
        """
            import asyncio
            from loom import Agent, Runtime

            async def main():
                rt = Runtime()
                got = asyncio.get_running_loop().create_future()
                async def on_event(ctx, topic, event):
                    got.set_result(event.payload)
                sink = Agent("sink", topics=["deep.>"], on_event=on_event, runtime=rt)
                src = Agent("src", runtime=rt)
                await sink.start(); await src.start()
                for kind, n in (("list", 200_000), ("dict", 10_000)):
                    payload = nest(kind, n)
                    got = asyncio.get_running_loop().create_future()
                    await src.ctx.emit("deep.x", payload=payload)
                    print(kind, (await asyncio.wait_for(got, 5)) is payload)
                await rt.stop(timeout=5)

            asyncio.run(main())
            """
    )
    proc = _run(code)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert proc.stdout.splitlines() == ["list True", "dict True"]


# -- in-process: depths around the limit ---------------------------------------------


def _nested_list(levels: int) -> Any:
    v: Any = "x"
    for _ in range(levels):
        v = [v]
    return v


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    root = _project(tmp_path)
    toml = root / "loom.toml"
    rt = Runtime(parse_project_config(toml.read_text(), toml))
    a = Agent("worker", runtime=rt)
    await a.start()
    yield a
    await rt.stop(timeout=5)


async def test_the_depth_limit_is_exact(agent: Agent) -> None:
    limit = _core.MAX_JSON_DEPTH
    assert limit == 100
    # {"path": [... limit - 1 lists ...]} is `limit` levels: accepted (and then wrong).
    with pytest.raises(ToolArgumentsInvalid, match="expected string") as ok:
        await agent.ctx.tool("fs:read_file", {"path": _nested_list(limit - 1)})
    assert "nested deeper" not in str(ok.value)
    for levels in (limit, limit + 1, 1000, 5000):
        with pytest.raises(ToolArgumentsInvalid, match="nested deeper than 100 levels") as info:
            await agent.ctx.tool("fs:read_file", {"path": _nested_list(levels)})
        assert isinstance(info.value, LoomError)
        assert info.value.tool == "fs:read_file"


async def test_a_deep_payload_with_tracing_and_content_capture(
    agent: Agent, span_exporter: Any
) -> None:
    # Tool arguments go on the span as JSON text when content capture is on: a deep
    # payload must still end as the tool's LoomError (json.dumps raised RecursionError).
    from loom.telemetry import set_capture_content

    set_capture_content(True)
    try:
        with pytest.raises(ToolArgumentsInvalid, match="nested deeper"):
            await agent.ctx.tool("fs:read_file", {"path": _nested_list(5000)})
    finally:
        set_capture_content(None)
    spans = [s for s in span_exporter.get_finished_spans() if s.name.startswith("execute_tool")]
    assert spans and "nested too deep" in str(spans[0].attributes)


# -- fs:search: a timeout that is one ------------------------------------------------


def _deep_tree(root: Path, depth: int, files: int) -> None:
    d = root
    for i in range(depth):
        d = d / f"d{i:02}"
        d.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            (d / f"file{f}").write_text("x")


def _busy_cpu(seconds: float) -> float:
    """CPU seconds the whole process burns while this thread sleeps ``seconds``."""
    t0 = time.process_time()
    time.sleep(seconds)
    return time.process_time() - t0


DEEP_STARS = "**/**/**/**/**/**/**/**/nomatch"


async def test_search_with_exponential_glob_returns_at_its_timeout(
    agent: Agent, tmp_path: Path
) -> None:
    _deep_tree(tmp_path / "ws", 50, 10)
    for glob in (DEEP_STARS, "**/*/" * 12 + "nomatch"):
        t0 = time.monotonic()
        result = await agent.ctx.tool("fs:search", {"glob": glob}, timeout=0.5)
        took = time.monotonic() - t0
        assert took < 0.6, f"{glob}: {took:.2f}s"
        assert result["results"] == []
    # Nothing is left running: no worker burns CPU, and quick calls are quick.
    assert _busy_cpu(0.3) < 0.1
    t0 = time.monotonic()
    reads = await asyncio.gather(
        *(agent.ctx.tool("fs:read_file", {"path": "notes.md"}, timeout=2) for _ in range(8))
    )
    assert [r["content"] for r in reads] == ["hello"] * 8
    assert time.monotonic() - t0 < 0.5


def _costly_tree(ws: Path) -> str:
    """12 000 entries whose names make every component match the scan's worst case
    (each retry runs along 100 literals): about half a second of honest work for the
    returned glob even in a release build, so only a deadline or a cancel ends it."""
    name = "a" * 199 + "b"
    d = ws
    for i in range(12):
        d = d / f"{name}{i}"
        d.mkdir()
        for f in range(1000):
            (d / f"{name}{f:03}").touch()
    costly = "*" + "a" * 100 + "b*"
    return "/".join([f"**/{costly}"] * 6) + "/nomatch"


async def test_a_costly_glob_is_stopped_by_its_timeout_inside_the_matcher(
    agent: Agent, tmp_path: Path
) -> None:
    glob = _costly_tree(tmp_path / "ws")
    for timeout in (0.1, 0.25):
        t0 = time.monotonic()
        result = await agent.ctx.tool("fs:search", {"glob": glob}, timeout=timeout)
        took = time.monotonic() - t0
        assert result["stopped"] == "timeout", result
        assert took < timeout + 0.05, f"{took:.3f}s for a {timeout}s timeout"
    assert _busy_cpu(0.3) < 0.1


async def test_many_abandoned_searches_do_not_exhaust_the_workers(
    agent: Agent, tmp_path: Path
) -> None:
    # More calls than the pool has workers (64), each given up on by its caller: with
    # workers that kept going, the pool stayed full and every later tool call stalled.
    glob = _costly_tree(tmp_path / "ws")

    async def abandoned() -> None:
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(agent.ctx.tool("fs:search", {"glob": glob}), 0.3)

    t0 = time.monotonic()
    await asyncio.gather(*(abandoned() for _ in range(70)))
    assert time.monotonic() - t0 < 1.0
    await asyncio.sleep(0.1)  # cancelled calls stop within a few ms of the flag
    assert _busy_cpu(0.3) < 0.1
    t0 = time.monotonic()
    reads = await asyncio.gather(
        *(agent.ctx.tool("fs:read_file", {"path": "notes.md"}, timeout=2) for _ in range(8))
    )
    assert [r["content"] for r in reads] == ["hello"] * 8
    assert time.monotonic() - t0 < 0.5

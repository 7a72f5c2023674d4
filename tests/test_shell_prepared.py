"""Prepared shell processes (core/src/sandbox/warm.rs) through the Python API: each call
gets its own argv and working directory, and no prepared process outlives the runtime."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from loom import Agent, Runtime
from loom.config import parse_project_config


def own_namespace_children() -> set[int]:
    """Pids of this process's children that are the init of a pid namespace of their own."""
    me = os.getpid()
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        nspid = fields.get("NSpid", "").split()
        if int(fields.get("PPid", "0")) == me and len(nspid) > 1 and nspid[-1] == "1":
            found.add(int(entry))
    return found


async def test_prepared_calls_get_their_own_argv_and_cwd_and_die_with_the_runtime(
    tmp_path: Path,
) -> None:
    (tmp_path / "loom.toml").write_text('[workspace]\nroot = "ws"\n')
    (tmp_path / "ws").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "ws" / name).mkdir()
    project = parse_project_config((tmp_path / "loom.toml").read_text(), tmp_path / "loom.toml")
    rt = Runtime(project)
    agent = Agent("worker", runtime=rt)
    await agent.start()
    before = own_namespace_children()
    try:
        ws = (tmp_path / "ws").resolve()
        for i in range(12):
            await asyncio.sleep(0.02)  # the stager refills its stock between calls
            cwd = "abc"[i % 3]
            pwd = await agent.ctx.tool("system:shell", {"argv": ["pwd"], "cwd": cwd})
            assert pwd["stdout"] == f"{ws / cwd}\n", pwd
            echo = await agent.ctx.tool("system:shell", {"argv": ["echo", f"call {i}"]})
            assert echo["stdout"] == f"call {i}\n", echo
        results = await asyncio.gather(
            *(agent.ctx.tool("system:shell", {"argv": ["echo", str(i)]}) for i in range(8))
        )
        assert [r["stdout"] for r in results] == [f"{i}\n" for i in range(8)]
        await asyncio.sleep(0.2)
        idle = own_namespace_children() - before
        assert idle, "no prepared process is waiting (the stager made none)"
    finally:
        await rt.stop(timeout=5)
    for _ in range(100):
        left = own_namespace_children() & idle
        if not left:
            break
        await asyncio.sleep(0.02)
    assert not left, f"prepared processes outlived the runtime: {left}"

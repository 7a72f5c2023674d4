"""Prepared shell processes (core/src/sandbox/warm.rs) through the Python API: each call
gets its own argv and working directory, and no prepared process outlives the runtime."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from loom import Agent, Runtime
from loom.config import parse_project_config


def own_namespace_children() -> set[int]:
    """Pids of this process's live children that are the init of a pid namespace of their
    own."""
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
        if fields.get("State", "").split()[:1] in (["Z"], ["X"]):
            continue  # a call's init that has exited and is not yet reaped
        if int(fields.get("PPid", "0")) == me and len(nspid) > 1 and nspid[-1] == "1":
            found.add(int(entry))
    return found


async def prepared_processes(before: set[int]) -> set[int]:
    """The prepared processes made since ``before``, waiting up to 10 s for some: the
    stager runs at ``SCHED_IDLE``, on spare CPU time, which a busy machine may not have."""
    for _ in range(200):
        found = own_namespace_children() - before
        await asyncio.sleep(0.05)
        # Still there 50 ms later: not the init of a call that has just returned, which
        # exits right after reporting.
        if waiting := found & own_namespace_children():
            return waiting
    return set()


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
        idle = await prepared_processes(before)
        assert idle, "no prepared process is waiting (the stager made none)"
    finally:
        await rt.stop(timeout=5)
    for _ in range(100):
        left = own_namespace_children() & idle
        if not left:
            break
        await asyncio.sleep(0.02)
    assert not left, f"prepared processes outlived the runtime: {left}"


def sched_of(stat: str) -> tuple[int, int]:
    """(policy, nice) from a ``/proc/.../stat`` text: fields 41 and 19."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[38]), int(fields[16])


def thread_named(name: str) -> int | None:
    """The tid of this process's thread named ``name``."""
    for tid in os.listdir("/proc/self/task"):
        try:
            if Path(f"/proc/self/task/{tid}/comm").read_text().strip() == name:
                return int(tid)
        except OSError:
            continue
    return None


async def test_a_prepared_call_runs_at_its_callers_priority_not_the_stagers(
    tmp_path: Path,
) -> None:
    (tmp_path / "loom.toml").write_text(
        '[workspace]\nroot = "ws"\n[tools.shell]\nread_paths = ["/proc"]\n'
    )
    (tmp_path / "ws").mkdir()
    project = parse_project_config((tmp_path / "loom.toml").read_text(), tmp_path / "loom.toml")
    rt = Runtime(project)
    agent = Agent("worker", runtime=rt)
    await agent.start()
    before = own_namespace_children()
    try:
        await agent.ctx.tool("system:shell", {"argv": ["true"]})  # starts the stager
        waiting = await prepared_processes(before)
        stager = thread_named("loom-stager")
        if stager is None or not waiting:
            pytest.skip("no prepared processes here (not root, or no staged writes)")
        if sched_of(Path(f"/proc/self/task/{stager}/stat").read_text())[0] != os.SCHED_IDLE:
            pytest.skip("the stager is not at SCHED_IDLE (no CAP_SYS_NICE)")
        # What this test is about: a waiting prepared process has the stager's SCHED_IDLE.
        assert {sched_of(Path(f"/proc/{a}/stat").read_text())[0] for a in waiting} == {
            os.SCHED_IDLE
        }
        for _ in range(6):
            await asyncio.sleep(0.05)  # refilled: each call takes a prepared process
            got = await agent.ctx.tool("system:shell", {"argv": ["cat", "/proc/self/stat"]})
            assert got["exit_code"] == 0, got
            # The tool workers run at the default: SCHED_OTHER, nice 0.
            assert sched_of(got["stdout"]) == (os.SCHED_OTHER, 0), got["stdout"]
    finally:
        await rt.stop(timeout=5)

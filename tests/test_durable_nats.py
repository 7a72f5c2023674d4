"""Durable runs with the nats store across real processes: `loom run` A handles an event
(a journaled `ctx.now()`, a Python tool with a side effect) and is killed with SIGKILL
while its handler waits; `loom run --agents worker` B takes the run over from the
JetStream journal, replays the journaled steps (the tool does not run again) and
finishes it. Once on the same machine (A's process is seen to be gone) and once with B
under another host name (an own UTS namespace), where only the lease's expiry lets B in.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from loom import Agent, Runtime
from loom.durable import RunRecord
from loom.durable.nats_store import NatsJournal
from loom.nats import connect, enable_jetstream
from loom.nats.settings import JetStreamSettings
from nats_servers import NatsServer

LEASE = 2.0

WORKER = """\
import asyncio, os, time
from loom.tools import tool

@tool(name="side:append")
def append(line: str) -> int:
    \"\"\"Appends a line to the side-effect file (not idempotent).\"\"\"
    with open(os.environ["SIDE_FILE"], "a") as f:
        f.write(line + "\\n")
    return os.getpid()

async def on_event(ctx, topic, event):
    started = await ctx.now()
    ran_in = await ctx.tool("side:append", {"line": f"job {event.payload['n']}"})
    with open(os.environ["REACHED_FILE"], "a") as f:
        f.write(f"{os.getpid()} {started!r} {ran_in} {time.time()!r}\\n")
    while not os.path.exists(os.environ["GATE_FILE"]):
        await asyncio.sleep(0.05)
    await ctx.emit("work.done", payload={"pid": os.getpid(), "started": started})
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(jetstream=True, store=tmp_path / "js").start()
    yield srv
    srv.stop()


class Project:
    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.tag = uuid.uuid4().hex[:8]
        self.stream = f"D{self.tag}"
        self.bucket = f"runs_{self.tag}"
        self.side = root / "side.txt"
        self.reached = root / "reached.txt"
        self.gate = root / "gate"
        self.logs: dict[int, list[str]] = {}
        (root / "agents").mkdir(parents=True)
        (root / "agents" / "worker.py").write_text(WORKER)
        (root / "loom.toml").write_text(
            textwrap.dedent(
                f"""
                [project]
                name = "durnats"
                [bus]
                nats = "{url}"
                [bus.jetstream]
                stream = "{self.stream}"
                [durability]
                store = "nats"
                bucket = "{self.bucket}"
                lease = {LEASE}
                [agents.worker]
                code = "agents/worker.py"
                topics = ["work.jobs"]
                """
            )
        )

    def reached_lines(self) -> list[list[str]]:
        if not self.reached.exists():
            return []
        return [line.split() for line in self.reached.read_text().splitlines() if line]

    def start(self, *args: str, hostname: str | None = None) -> subprocess.Popen[str]:
        env = dict(
            os.environ,
            SIDE_FILE=str(self.side),
            REACHED_FILE=str(self.reached),
            GATE_FILE=str(self.gate),
            LOOM_LOG_LEVEL="INFO",
        )
        argv = [sys.executable, "-m", "loom.cli", "run", *args]
        if hostname is not None:
            # Another "machine": its own host name, so A's pid tells B nothing.
            script = f'hostname {hostname} && exec "$@"'
            argv = ["unshare", "--uts", "sh", "-c", script, "-", *argv]
        proc = subprocess.Popen(
            argv, cwd=self.root, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        lines: list[str] = []
        for line in proc.stderr:
            lines.append(line)
            if "agent(s) running" in line:
                break
        else:
            pytest.fail(f"loom run {args} exited: {''.join(lines)[-3000:]}")
        self.logs[proc.pid] = lines
        threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()
        return proc

    def log_of(self, proc: subprocess.Popen[str]) -> str:
        return "".join(self.logs.get(proc.pid, []))[-4000:]


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def publisher(server: NatsServer) -> AsyncIterator[Any]:
    rts: list[Runtime] = []

    async def make(stream: str) -> Agent:
        rt = Runtime()
        rts.append(rt)
        bridge = await connect(rt, server.url)
        await enable_jetstream(rt, bridge, JetStreamSettings(stream=stream), ["work.jobs"])
        agent = Agent(f"publisher-{uuid.uuid4().hex[:6]}", runtime=rt)
        await agent.start()
        return agent

    yield make
    for rt in rts:
        await rt.stop()


async def journal_runs(url: str, bucket: str) -> list[RunRecord]:
    nc = await nats.connect(url)
    try:
        store = NatsJournal(nc, bucket)
        await store.open()
        listing = await store.list_runs(agent="worker")
        assert listing.broken == []
        return listing.runs
    finally:
        await nc.close()


async def take_over(
    server: NatsServer, publisher: Any, tmp_path: Path, b_hostname: str | None
) -> tuple[float, float]:
    """Runs the scenario; returns (seconds from the kill to B's take-over, seconds from
    the kill to the end of A's last lease)."""
    p = Project(tmp_path / "p", server.url)
    pub = await publisher(p.stream)
    a = p.start("--no-job")
    b: subprocess.Popen[str] | None = None
    try:
        await pub.ctx.emit("work.jobs", "job", {"n": 1})
        await wait_until(lambda: len(p.reached_lines()) == 1, 30, "A reaches the gate")
        assert p.reached_lines()[0][0] == str(a.pid)
        b = p.start("--agents", "worker", hostname=b_hostname)
        # B's start-up and its first scan see the run held by a live A: left alone.
        await asyncio.sleep(1.5 * LEASE)
        assert len(p.reached_lines()) == 1
        [held] = await journal_runs(p.url, p.bucket)
        assert held.status == "running" and held.owner.split(":")[1] == str(a.pid)

        a.send_signal(signal.SIGKILL)
        a.wait()
        killed = time.time()
        [orphan] = await journal_runs(p.url, p.bucket)
        assert orphan.owner == held.owner  # nobody renews it any more
        try:
            await wait_until(lambda: len(p.reached_lines()) == 2, 6 * LEASE + 10, "B resumes")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; B's log:\n{p.log_of(b)}") from None
        b_pid, b_started, b_tool_pid, b_reached = p.reached_lines()[1]
        assert b_pid == str(b.pid)
        a_pid, a_started, a_tool_pid, _ = p.reached_lines()[0]
        # Replayed from the journal: the clock reading and the tool's result are A's,
        # and the side effect happened once.
        assert (b_started, b_tool_pid) == (a_started, a_tool_pid) == (a_started, a_pid)
        assert p.side.read_text() == "job 1\n"

        p.gate.touch()

        async def finished() -> RunRecord | None:
            runs = await journal_runs(p.url, p.bucket)
            return runs[0] if runs and runs[0].status == "finished" else None

        deadline = time.monotonic() + 20
        done = await finished()
        while done is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            done = await finished()
        assert done is not None, "the run did not finish"
        assert done.owner.split(":")[1] == str(b.pid)
        assert done.run_id == held.run_id and done.steps >= 2 and done.error == ""
        if b_hostname is not None:
            assert done.owner.startswith(f"{b_hostname}:")
        assert p.side.read_text() == "job 1\n"
        return float(b_reached) - killed, orphan.lease_until - killed
    finally:
        if b is not None:
            stop(b)
        stop(a)


async def test_another_process_on_the_machine_takes_over(
    server: NatsServer, publisher: Any, tmp_path: Path
) -> None:
    took, _ = await take_over(server, publisher, tmp_path, None)
    # A's pid is gone: B takes over at its next scan (every lease), lease or not.
    assert took < 2 * LEASE + 2


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare --uts (root)"
)
async def test_another_machine_takes_over_when_the_lease_ends(
    server: NatsServer, publisher: Any, tmp_path: Path
) -> None:
    took, lease_left = await take_over(server, publisher, tmp_path, "loom-other-machine")
    assert lease_left > 0.3, "A's lease had ended before the kill"
    assert took >= lease_left, "B took the run while A's lease still held"
    assert took < lease_left + 2 * LEASE + 2


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare --uts (root)"
)
async def test_a_stalled_owner_stops_when_its_run_was_taken_over(
    server: NatsServer, publisher: Any, tmp_path: Path
) -> None:
    """A stalls (SIGSTOP) longer than its lease; B, on another machine, takes the run
    over. When A wakes up it must leave the run to B: the live part runs once."""
    p = Project(tmp_path / "p", server.url)
    pub = await publisher(p.stream)
    nc = await nats.connect(server.url)
    done: list[bytes] = []

    async def seen(msg: Any) -> None:
        done.append(msg.data)

    await nc.subscribe("work.done", cb=seen)
    a = p.start("--no-job")
    b: subprocess.Popen[str] | None = None
    try:
        await pub.ctx.emit("work.jobs", "job", {"n": 1})
        await wait_until(lambda: len(p.reached_lines()) == 1, 30, "A reaches the gate")
        b = p.start("--agents", "worker", hostname="loom-other-machine")
        a.send_signal(signal.SIGSTOP)
        await wait_until(lambda: len(p.reached_lines()) == 2, 6 * LEASE + 10, "B resumes")
        a.send_signal(signal.SIGCONT)
        await asyncio.sleep(2 * LEASE)  # A's lease upkeep runs again meanwhile
        p.gate.touch()
        await wait_until(lambda: len(done) >= 1, 20, "the run emits")
        await asyncio.sleep(2)
        assert len(done) == 1, f"the live part ran {len(done)} times: {done}"
        [finished] = await journal_runs(p.url, p.bucket)
        assert finished.status == "finished" and finished.owner.startswith("loom-other-machine:")
    finally:
        if b is not None:
            stop(b)
        stop(a)
        await nc.close()

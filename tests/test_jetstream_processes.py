"""Reliable delivery with real processes and real signals: a `loom run` worker killed
with SIGKILL mid-stream and started again, a queue group losing a member, nats-server
restarted under load (file storage), and a SIGSTOPped consumer that must not hold up
anyone else."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from loom import Agent, Envelope, Runtime
from loom.nats import connect, enable_jetstream
from loom.nats.settings import JetStreamSettings
from nats_servers import NatsServer

WORKER = """\
import asyncio, json, os

async def on_event(ctx, topic, event):
    await asyncio.sleep(float(os.environ.get("WORK_SECONDS", "0.02")))
    line = json.dumps({"n": event.payload["n"], "count": event.delivery_count,
                       "pid": os.getpid(), "id": event.id})
    with open(os.environ["DONE_FILE"], "a") as f:
        f.write(line + "\\n")
        f.flush()
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(jetstream=True, store=tmp_path / "js").start()
    yield srv
    srv.stop()


def project(root: Path, url: str, stream: str, *, group: str | None = None) -> Path:
    (root / "agents").mkdir(parents=True, exist_ok=True)
    (root / "agents" / "worker.py").write_text(WORKER)
    group_line = f'group = "{group}"\n' if group else ""
    (root / "loom.toml").write_text(
        textwrap.dedent(
            f"""
            [bus]
            nats = "{url}"
            [bus.jetstream]
            stream = "{stream}"
            ack_wait = 2.0
            backoff = [0.1]
            [agents.worker]
            code = "agents/worker.py"
            topics = ["work.jobs"]
            max_concurrency = 4
            """
        )
        + group_line
    )
    return root


def start_worker(root: Path, done: Path, work_seconds: float = 0.02) -> subprocess.Popen[str]:
    env = dict(os.environ, DONE_FILE=str(done), WORK_SECONDS=str(work_seconds))
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom.cli", "run"],
        cwd=root,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    for line in proc.stderr:
        if "agent(s) running" in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        pytest.fail(f"worker exited early: {proc.wait()}")
    # Keep draining stderr, so the child never blocks on a full pipe.
    import threading

    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def done_lines(done: Path) -> list[dict[str, Any]]:
    if not done.exists():
        return []
    return [json.loads(line) for line in done.read_text().splitlines() if line.strip()]


async def wait_until(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


@pytest.fixture
async def publisher(server: NatsServer) -> AsyncIterator[Any]:
    rts: list[Runtime] = []

    async def make(stream: str) -> Agent:
        rt = Runtime()
        rts.append(rt)
        bridge = await connect(rt, server.url)
        await enable_jetstream(
            rt, bridge, JetStreamSettings(stream=stream, ack_wait=2.0), ["work.jobs"]
        )
        agent = Agent(f"publisher-{uuid.uuid4().hex[:6]}", runtime=rt)
        await agent.start()
        return agent

    yield make
    for rt in rts:
        await rt.stop()


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_kill_9_mid_stream_loses_nothing(
    server: NatsServer, publisher: Any, tmp_path: Path
) -> None:
    stream = f"K{uuid.uuid4().hex[:8]}"
    root = project(tmp_path / "w", server.url, stream)
    done = tmp_path / "done.jsonl"
    pub = await publisher(stream)
    worker = start_worker(root, done, work_seconds=0.05)
    total = 120
    try:
        for n in range(total):
            await pub.ctx.emit("work.jobs", "job", {"n": n})
        await wait_until(lambda: len(done_lines(done)) >= 20, 30)
        worker.kill()  # SIGKILL: no cleanup, in-flight events unacked
        worker.wait()
        handled_before = len(done_lines(done))
        assert handled_before < total, "the worker finished before it was killed"
        # Published while no worker runs: stored, delivered when one starts.
        for n in range(total, total + 10):
            await pub.ctx.emit("work.jobs", "job", {"n": n})
        worker = start_worker(root, done, work_seconds=0.0)
        await wait_until(lambda: {d["n"] for d in done_lines(done)} >= set(range(total + 10)), 60)
    finally:
        stop(worker)
    lines = done_lines(done)
    assert {d["n"] for d in lines} == set(range(total + 10))  # none lost
    assert len({d["pid"] for d in lines}) == 2
    # Events in flight at the kill come back as redeliveries, counted by the server.
    # (4 handlers of 50 ms each run at any moment, so the kill catches some.)
    redelivered = [d for d in lines if d["count"] > 1]
    assert redelivered, "no event in flight at the kill was redelivered"
    assert all(d["pid"] != lines[0]["pid"] for d in redelivered)


async def test_a_queue_group_member_killed_the_other_finishes(
    server: NatsServer, publisher: Any, tmp_path: Path
) -> None:
    stream = f"G{uuid.uuid4().hex[:8]}"
    done = tmp_path / "done.jsonl"
    a = start_worker(project(tmp_path / "a", server.url, stream, group="pool"), done, 0.05)
    b = start_worker(project(tmp_path / "b", server.url, stream, group="pool"), done, 0.05)
    pub = await publisher(stream)
    total = 80
    try:
        for n in range(total):
            await pub.ctx.emit("work.jobs", "job", {"n": n})
        await wait_until(lambda: len({d["pid"] for d in done_lines(done)}) == 2, 30)
        a.kill()
        a.wait()
        await wait_until(lambda: {d["n"] for d in done_lines(done)} >= set(range(total)), 60)
    finally:
        stop(a)
        stop(b)
    lines = done_lines(done)
    assert {d["n"] for d in lines} == set(range(total))
    # One group, one consumer: apart from the killed member's in-flight events, no
    # event is handled twice.
    duplicates = len(lines) - len({d["n"] for d in lines})
    assert duplicates <= 4  # max_concurrency of the killed member


async def test_nats_server_restart_loses_no_acked_event(
    server: NatsServer, publisher: Any, tmp_path: Path
) -> None:
    stream = f"R{uuid.uuid4().hex[:8]}"
    done = tmp_path / "done.jsonl"
    pub = await publisher(stream)
    # A worker runs across the restart: its consumer must pick up by itself too.
    worker = start_worker(project(tmp_path / "w", server.url, stream), done, 0.02)
    acked: list[int] = []
    try:
        for n in range(50):
            await pub.ctx.emit("work.jobs", "job", {"n": n})
            acked.append(n)
        server.restart()  # file storage: what was acked survives
        # The clients reconnect by themselves; publishes succeed again once they have.
        deadline = time.monotonic() + 20
        n = 50
        while n < 70:
            try:
                await pub.ctx.emit("work.jobs", "job", {"n": n}, timeout=2.0)
                acked.append(n)
                n += 1
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        await wait_until(lambda: {d["n"] for d in done_lines(done)} >= set(acked), 60)
        assert worker.poll() is None, "the worker died with the server"
    finally:
        stop(worker)


async def test_a_stopped_consumer_does_not_hold_up_others(
    server: NatsServer, publisher: Any, tmp_path: Path
) -> None:
    stream = f"S{uuid.uuid4().hex[:8]}"
    done = tmp_path / "stalled.jsonl"
    stalled = start_worker(project(tmp_path / "s", server.url, stream), done, 0.0)
    pub = await publisher(stream)
    got: list[Envelope] = []

    async def healthy(ctx: Any, topic: str, event: Envelope) -> None:
        got.append(event)

    # Another agent (its own durable consumer) in this process.
    other = Agent("healthy", topics=["work.jobs"], on_event=healthy, runtime=pub.runtime)
    await other.start()
    try:
        os.kill(stalled.pid, signal.SIGSTOP)
        started = time.monotonic()
        for n in range(300):
            await pub.ctx.emit("work.jobs", "job", {"n": n})
        publish_seconds = time.monotonic() - started
        await wait_until(lambda: len(got) == 300, 30)
        assert publish_seconds < 15, publish_seconds
        assert done_lines(done) == []  # it really was stopped
        os.kill(stalled.pid, signal.SIGCONT)
        # It catches up once it runs again: its events were kept for it.
        await wait_until(lambda: {d["n"] for d in done_lines(done)} == set(range(300)), 60)
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
        stop(stalled)

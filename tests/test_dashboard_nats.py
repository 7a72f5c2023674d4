"""The dashboard of a project split over processes on one real nats-server (with
JetStream): the page lists every process of the project with its agents and their
subscriptions, and the JetStream consumers with their counts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from loom.app import run_project
from loom.config import load_project_config
from loom.nats.presence import gather, subject
from nats_servers import NatsServer

pytestmark = pytest.mark.timeout(90)

WORKER = """
async def on_event(ctx, topic, event):
    await ctx.reply(event, "done", {"by": ctx.agent_id})
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    s = NatsServer(jetstream=True, store=tmp_path / "js").start()
    try:
        yield s
    finally:
        s.stop()


def make_project(root: Path, url: str) -> Path:
    (root / "agents").mkdir(parents=True)
    (root / "agents" / "worker.py").write_text(WORKER)
    (root / "loom.toml").write_text(
        f"""
[project]
name = "split-desk"

[bus]
nats = "{url}"

[agents.worker]
code = "agents/worker.py"
topics = ["jobs.>"]
group = "workers"

[agents.watcher]
code = "agents/worker.py"
topics = ["alerts.*"]
qos = "realtime"

[dashboard]
port = 0
"""
    )
    return root


def test_the_presence_subject_is_one_token_per_project() -> None:
    assert subject("split desk/\u00e9") == "_loom.presence.split_desk__"
    assert subject("") == "_loom.presence.project"


async def test_the_page_lists_every_process_of_the_project(
    tmp_path: Path, server: NatsServer
) -> None:
    root = make_project(tmp_path / "p", server.url)
    env = {**os.environ, "LOOM_PROJECT": str(root / "loom.toml")}
    log = (root / "worker.log").open("wb")
    worker = subprocess.Popen(  # noqa: ASYNC220 - returns at once; waited for below
        [sys.executable, "-m", "loom", "run", "--agents", "worker"],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stop = asyncio.Event()
    out = _Capture()
    try:
        await _until_file_says(root / "worker.log", "1 agent(s) running", worker)
        run = asyncio.ensure_future(
            run_project(
                load_project_config(root),
                stop=stop,
                out=out,
                install_signal_handlers=False,
                agents=["watcher"],
                dashboard=True,
            )
        )
        url = await _until(lambda: out.url)
        base, token = url.split("/?token=")
        async with aiohttp.ClientSession() as s:
            auth = {"Authorization": f"Bearer {token}"}
            procs = await (await s.get(base + "/api/processes", headers=auth)).json()
            bus = await (await s.get(base + "/api/bus", headers=auth)).json()
        pids = {p["process"]["pid"]: p for p in procs}
        assert set(pids) == {worker.pid, os.getpid()}, procs
        remote = pids[worker.pid]
        assert not remote["self"] and pids[os.getpid()]["self"]
        agents = {a["id"]: a for a in remote["agents"]}
        assert set(agents) == {"worker"}
        subs = [s for s in agents["worker"]["subscriptions"] if not s["inbox"]]
        assert subs == [
            {
                "pattern": "jobs.>",
                "qos": "reliable",
                "group": "workers",
                "transport": "jetstream",
                "inbox": False,
            }
        ]
        mine = {a["id"] for a in pids[os.getpid()]["agents"]}
        assert "watcher" in mine
        # The watcher's realtime subscription is an in-process queue; the reliable ones
        # (the worker's, in the other process) are JetStream consumers there, not here.
        watcher = [s["pattern"] for s in bus["subscriptions"] if s["agent"] == "watcher"]
        assert "alerts.*" in watcher
        assert bus["jetstream"] is not None and bus["jetstream"]["consumers"] == []
        stop.set()
        result = await asyncio.wait_for(run, 20)
        assert result.exit_code == 0
    finally:
        stop.set()
        worker.terminate()
        worker.wait(15)
        log.close()


async def test_gather_hears_nothing_from_other_projects(tmp_path: Path, server: NatsServer) -> None:
    import nats

    nc = await nats.connect(server.url)
    try:
        assert await gather(nc, "nobody-here", wait=0.2) == []
    finally:
        await nc.close()


class _Capture:
    def __init__(self) -> None:
        self.url: str | None = None

    def write(self, text: str) -> int:
        if text.startswith("dashboard: "):
            self.url = text.split(" ", 1)[1].strip()
        return len(text)

    def flush(self) -> None:
        return None


async def _until(get: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("not reached")
        await asyncio.sleep(0.05)


async def _until_file_says(path: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while text not in path.read_text(errors="replace"):
        if proc.poll() is not None:
            raise AssertionError(path.read_text(errors="replace"))
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in {path}")
        await asyncio.sleep(0.05)


async def test_bus_health_shows_a_consumers_backlog(tmp_path: Path, server: NatsServer) -> None:
    from loom import Agent, Runtime
    from loom.dashboard.server import Dashboard
    from loom.dashboard.settings import DashboardSettings

    root = make_project(tmp_path / "p", server.url)
    rt = Runtime(load_project_config(root))
    release = asyncio.Event()

    async def slow(ctx: Any, topic: str, event: Any) -> None:
        await release.wait()

    worker = Agent("slow", topics=["jobs.>"], on_event=slow, runtime=rt, max_concurrency=2)
    pub = Agent("pub", runtime=rt)
    await worker.start()
    await pub.start()
    await worker.ctx.subscriptions_ready()
    board = Dashboard(DashboardSettings(), runtime=rt, trace_dir=tmp_path)
    await board.start()
    try:
        for i in range(6):
            await pub.ctx.emit("jobs.x", "job", i)
        auth = {"Authorization": f"Bearer {board.url.split('token=')[1]}"}
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 10
            while True:
                bus = await (await s.get(board.base_url + "/api/bus", headers=auth)).json()
                (c,) = bus["jetstream"]["consumers"]
                if c.get("ack_pending") == 2 and c.get("pending") == 4:
                    break
                assert time.monotonic() < deadline, c
                await asyncio.sleep(0.1)
        assert c["pattern"] == "jobs.>" and bus["jetstream"]["counters"]["published"] == 6
    finally:
        release.set()
        await board.stop()
        await rt.stop(timeout=5)

"""One project split over processes on one NATS bus (JetStream): `loom run --agents`
starts some agents of the loom.toml; only the process started without `--agents` (or
with `--job`) sends the `[job]`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nats_servers import NatsServer

LOOM = [sys.executable, "-m", "loom.cli"]

PLANNER = """\
import asyncio

async def on_event(ctx, topic, event):
    parts = await asyncio.gather(
        *(ctx.request("work.do", payload=i, timeout=20) for i in range(8))
    )
    await ctx.reply(event, payload={
        "squares": sorted(p.payload["square"] for p in parts),
        "pids": len({p.payload["pid"] for p in parts}),
    })
"""

WORKER = """\
import asyncio, os

async def on_event(ctx, topic, event):
    await asyncio.sleep(0.2)
    await ctx.reply(event, payload={"square": event.payload ** 2, "pid": os.getpid()})
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(jetstream=True, store=tmp_path / "js").start()
    yield srv
    srv.stop()


def make_project(root: Path, url: str) -> Path:
    (root / "agents").mkdir(parents=True)
    (root / "agents" / "planner.py").write_text(PLANNER)
    (root / "agents" / "worker.py").write_text(WORKER)
    (root / "loom.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "split"
            [bus]
            nats = "{url}"
            [agents.planner]
            code = "agents/planner.py"
            topics = ["plan"]
            [agents.worker]
            code = "agents/worker.py"
            topics = ["work.do"]
            group = "workers"
            max_concurrency = 2
            [job]
            topic = "plan"
            timeout = 60
            """
        )
    )
    return root


def start(root: Path, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*LOOM, "run", *args], cwd=root, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if "agent(s) running" in line:
            break
    else:
        pytest.fail(f"loom run {args} exited: {''.join(lines)[-2000:]}")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def test_workers_in_two_processes_and_a_lead_that_sends_the_job(
    server: NatsServer, tmp_path: Path
) -> None:
    root = make_project(tmp_path / "p", server.url)
    workers = [start(root, "--agents", "worker") for _ in range(2)]
    try:
        time.sleep(0.5)
        for w in workers:
            assert w.poll() is None, "a worker process sent the job and exited"
        lead = subprocess.run(
            [*LOOM, "run", "--agents", "planner", "--job"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert lead.returncode == 0, lead.stderr[-3000:]
        answer = json.loads(lead.stdout)
        assert answer["squares"] == [0, 1, 4, 9, 16, 25, 36, 49]
        assert answer["pids"] == 2  # both worker processes served the group
    finally:
        for w in workers:
            w.send_signal(2)
            w.wait(timeout=20)
    assert all(w.returncode == 0 for w in workers)


def test_an_unknown_agent_name_is_a_clear_error(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", "nats://127.0.0.1:1")
    r = subprocess.run(
        [*LOOM, "run", "--agents", "planer"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "'planer' is no agent of this project; did you mean 'planner'?" in r.stderr


def test_job_flag_without_a_job_table(tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text('[project]\nname = "x"\n')
    r = subprocess.run(
        [*LOOM, "run", "--job"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "no [job] table" in r.stderr, r.stderr

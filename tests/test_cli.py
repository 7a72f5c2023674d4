"""The `loom` command: run (job and reactive), new, and its errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

LOOM = [sys.executable, "-m", "loom.cli"]


def loom(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LOOM, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def make_project(tmp_path: Path, agent_code: str, toml_extra: str = "") -> Path:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "a.py").write_text(textwrap.dedent(agent_code))
    (tmp_path / "loom.toml").write_text(
        textwrap.dedent(
            """
            [project]
            name = "t"

            [agents.a]
            code = "agents/a.py"
            topics = ["work.>"]
            """
        )
        + textwrap.dedent(toml_extra)
    )
    return tmp_path


def test_new_then_run_works_as_generated(tmp_path: Path) -> None:
    r = loom("new", "proj", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = loom("run", cwd=tmp_path / "proj")
    assert r.returncode == 0, r.stderr
    assert '"message": "Hello, world!"' in r.stdout
    # A second `new` into the same directory refuses instead of overwriting.
    r = loom("new", "proj", cwd=tmp_path)
    assert r.returncode == 2 and "not empty" in r.stderr


def test_job_failure_exits_non_zero_with_message(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        """
        async def on_event(ctx, topic, event):
            await ctx.reply(event, "error", {"reason": "no can do"})
        """,
        """
        [job]
        topic = "work.x"
        """,
    )
    r = loom("run", cwd=tmp_path)
    assert r.returncode == 1
    assert "job failed" in r.stderr and "no can do" in r.stdout


def test_job_timeout_exits_non_zero(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        """
        async def on_event(ctx, topic, event):
            pass  # never replies
        """,
        """
        [job]
        topic = "work.x"
        timeout = 0.5
        """,
    )
    start = time.monotonic()
    r = loom("run", cwd=tmp_path)
    assert r.returncode == 1 and "timed out" in r.stderr
    assert time.monotonic() - start < 30


def test_bad_config_exits_2_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text('[agents.a]\ncode = "x.py"\ntopics = ["a..b"]\n')
    r = loom("run", cwd=tmp_path)
    assert r.returncode == 2
    assert "loom.toml:3" in r.stderr and "token 2 is empty" in r.stderr
    assert "Traceback" not in r.stderr


def test_agent_without_handler_is_a_clear_error(tmp_path: Path) -> None:
    make_project(tmp_path, "x = 1\n")
    r = loom("run", cwd=tmp_path)
    assert r.returncode == 2
    assert "defines none of on_event" in r.stderr and "Traceback" not in r.stderr


def test_missing_agent_file(tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text('[agents.a]\ncode = "nope.py"\n')
    r = loom("run", cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr


def test_reactive_project_runs_until_sigint_then_exits_0(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        """
        import pathlib
        async def on_event(ctx, topic, event):
            pass
        async def on_start(ctx):
            pathlib.Path("started").write_text("yes")
        async def on_stop(ctx):
            pathlib.Path("stopped").write_text("yes")
        """,
    )
    proc = subprocess.Popen(
        [*LOOM, "run"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for _ in range(200):
            if (tmp_path / "started").exists():
                break
            time.sleep(0.05)
        assert (tmp_path / "started").exists()
        time.sleep(0.3)
        assert proc.poll() is None, "a reactive project keeps running"
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert (tmp_path / "stopped").read_text() == "yes"


def test_tools_lists_native_and_openai_format(tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text(
        '[workspace]\nroot = "ws"\n[tools]\nrequire_approval = ["system:shell"]\n'
    )
    r = loom("tools", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "fs:read_file" in r.stdout and "native" in r.stdout
    assert "system:shell" in r.stdout and "[approval]" in r.stdout
    r = loom("tools", "--openai", cwd=tmp_path)
    import json

    tools = json.loads(r.stdout)
    names = {t["function"]["name"] for t in tools}
    assert "fs__read_file" in names and all(t["type"] == "function" for t in tools)
    r = loom("tools", "--sandbox", cwd=tmp_path)
    assert "landlock=" in r.stdout and "shell allowlist:" in r.stdout


def test_tools_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    r = loom("tools", "missing.toml", cwd=tmp_path)
    assert r.returncode == 2 and "file not found" in r.stderr

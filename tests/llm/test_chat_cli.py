"""`loom chat` in a subprocess, driven through its stdin, on the real local model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(300)


def test_chat_session(smollm2: Any, tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text(
        f'[llm.test]\nbase_url = "{smollm2.base_url}"\nmodel = "{smollm2.model}"\n'
        "max_tokens = 24\ntemperature = 0.0\n"
    )
    script = "/help\nSay hello.\n/history\n/clear\n/history\n/nope\n/exit\n"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "loom.cli",
            "--log-level",
            "WARNING",
            "chat",
            "--provider",
            "test",
            "--no-tools",
        ],
        cwd=tmp_path,
        input=script,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "loom chat — test" in out and "/history   the conversation so far" in out
    assert "agent> " in out and "tokens," in out  # a streamed answer and its usage line
    assert "user: Say hello." in out  # /history before /clear
    assert "(conversation cleared)" in out and "(no history yet)" in out
    assert "unknown command /nope" in out


def test_chat_keeps_log_lines_out_of_the_conversation(smollm2: Any, tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text(
        f'[llm.test]\nbase_url = "{smollm2.base_url}"\nmodel = "{smollm2.model}"\n'
        "max_tokens = 8\ntemperature = 0.0\n"
    )
    cmd = [sys.executable, "-m", "loom.cli", "chat", "--provider", "test", "--no-tools"]
    r = subprocess.run(
        cmd, cwd=tmp_path, input="Hi.\n/exit\n", capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stderr
    assert " INFO " not in r.stdout + r.stderr, (r.stdout, r.stderr)
    (log,) = (tmp_path / ".loom" / "logs").glob("chat-*.log")
    assert str(log) in r.stdout
    assert " INFO " in log.read_text()  # at INFO, something was logged — to the file
    r = subprocess.run(
        [*cmd, "--verbose"],
        cwd=tmp_path,
        input="/exit\n",
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0 and " INFO " in r.stderr, r.stderr


def test_chat_in_a_real_terminal(smollm2: Any, tmp_path: Path) -> None:
    """The same session on a pseudo-terminal (readline active, prompts on the tty)."""
    import os
    import pty
    import select
    import time

    (tmp_path / "loom.toml").write_text(
        f'[llm.test]\nbase_url = "{smollm2.base_url}"\nmodel = "{smollm2.model}"\n'
        "max_tokens = 16\ntemperature = 0.0\n"
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec the CLI on the tty
        os.chdir(tmp_path)
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "loom.cli",
                "--log-level",
                "WARNING",
                "chat",
                "--provider",
                "test",
                "--no-tools",
            ],
        )
    out = b""

    def read_until(marker: bytes, timeout: float = 120) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while marker not in out:
            assert time.monotonic() < deadline, out.decode(errors="replace")[-2000:]
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break

    try:
        read_until(b"you> ")
        os.write(fd, b"Say hi.\n")
        read_until(b"tokens,")
        read_until(b"you> ")
        os.write(fd, b"/history\n")
        read_until(b"user: Say hi.")
        os.write(fd, b"/exit\n")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"agent> " in out

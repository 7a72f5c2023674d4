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

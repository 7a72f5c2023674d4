"""The repository itself: nothing generated at run time is tracked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [p for p in out.decode().split("\0") if p]


def test_no_tracked_file_lives_under_a_loom_directory() -> None:
    bad = [p for p in _tracked() if ".loom" in Path(p).parts]
    assert not bad, f"run-time files are tracked (traces, logs, journals): {bad}"


def test_loom_directories_are_ignored_at_any_depth() -> None:
    _tracked()
    probe = "examples/chat_assistant/.loom/traces/x.jsonl"
    r = subprocess.run(["git", "check-ignore", "--no-index", "-q", probe], cwd=ROOT, check=False)
    assert r.returncode == 0, f"{probe} is not ignored by .gitignore"

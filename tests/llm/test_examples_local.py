"""The original Loom apps' equivalents run here, on the real local model: the chat
assistant (two agents, stdin) and deep research (loom.patterns over the bus)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loom.llm.local_server import unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    reason = unavailable_reason()
    if reason:
        print(f"SKIP examples on the local model: {reason}", file=sys.stderr)
        pytest.skip(reason)
    for name in ("chat_assistant", "deep_research"):
        shutil.copytree(ROOT / "examples" / name, tmp_path / "examples" / name)
    shutil.copytree(ROOT / "workspace" / "sources", tmp_path / "workspace" / "sources")
    return tmp_path


def run(tree: Path, example: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "loom.cli", "run", f"examples/{example}"],
        cwd=tree,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=840,
    )


def test_chat_assistant(tree: Path) -> None:
    r = run(tree, "chat_assistant", "Hello, I am Ada.\nWhat is my name?\n")
    assert r.returncode == 0, r.stderr[-2000:]
    answers = [ln for ln in r.stdout.splitlines() if "assistant> " in ln]
    assert len(answers) == 2, r.stdout
    tokens = [int(a.rsplit("[", 1)[1].split()[0]) for a in answers]
    assert all(t > 0 for t in tokens)


def test_deep_research(tree: Path) -> None:
    r = run(tree, "deep_research")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Report: workspace/deep-research.md" in r.stdout
    report = (tree / "workspace" / "deep-research.md").read_text()
    assert report.startswith("# How should an agent runtime")
    assert report.count("\n## ") >= 1 and "Sources: sources/" in report
    assert "Review: score" in report

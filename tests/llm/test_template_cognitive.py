"""`loom new --template cognitive` generates a project that runs as generated, on the
real local model, and whose agent really reads its file through the sandboxed tool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loom.llm.local_server import unavailable_reason

pytestmark = pytest.mark.timeout(400)


def test_cognitive_template_runs_as_generated(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason:
        print(f"SKIP cognitive template: {reason}", file=sys.stderr)
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    cli = [sys.executable, "-m", "loom.cli"]
    r = subprocess.run(
        [*cli, "new", "proj", "--template", "cognitive"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    project = tmp_path / "proj"
    assert (project / "workspace" / "notes.md").is_file()
    r = subprocess.run(
        [*cli, "run"], cwd=project, env=env, capture_output=True, text=True, timeout=360
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip(), "the answer is printed"
    traces = [p for p in (project / ".loom" / "traces").glob("*.jsonl") if ".metrics" not in p.name]
    assert len(traces) == 1
    text = traces[0].read_text()
    assert '"execute_tool fs:read_file"' in text and '"invoke_agent assistant"' in text

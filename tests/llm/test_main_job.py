"""The main job — `loom run` on the repository's loom.toml — from a clean copy, on the
real local model: it exits 0, writes the report, the notes and one trace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loom.llm.local_server import unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)


def clean_copy(dst: Path) -> Path:
    shutil.copy(ROOT / "loom.toml", dst / "loom.toml")
    shutil.copytree(ROOT / "examples" / "research_desk", dst / "examples" / "research_desk")
    shutil.copytree(ROOT / "workspace" / "sources", dst / "workspace" / "sources")
    return dst


def test_main_job_from_a_clean_checkout(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason:
        print(f"SKIP main job: {reason}", file=sys.stderr)
        pytest.skip(reason)
    project = clean_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    r = subprocess.run(
        [sys.executable, "-m", "loom.cli", "run"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Report:   workspace/report.md" in r.stdout
    assert "Model:    local (smollm2-135m-instruct)" in r.stdout

    report = (project / "workspace" / "report.md").read_text()
    assert report.startswith("# How do agents stay safe")
    assert "## Sources" in report
    notes = sorted(p.name for p in (project / "workspace" / "notes").glob("*.md"))
    assert notes == ["event-buses.md", "sandboxing.md", "tracing.md"]
    # Progress on the terminal: the lead's plan and each researcher's work.
    assert "lead: question" in r.stderr and "wrote notes/" in r.stderr

    traces = [p for p in (project / ".loom" / "traces").glob("*.jsonl") if ".metrics" not in p.name]
    assert len(traces) == 1, traces
    spans = [
        span
        for line in traces[0].read_text().splitlines()
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]
    names = {s["name"] for s in spans}
    assert {s["traceId"] for s in spans} == {spans[0]["traceId"]}, "one trace per run"
    assert "execute_tool fs:read_file" in names and "execute_tool fs:write_file" in names
    assert any(n.startswith("chat ") for n in names)
    assert any(n.startswith("invoke_agent researcher") for n in names)
    assert str(traces[0].name) in r.stderr

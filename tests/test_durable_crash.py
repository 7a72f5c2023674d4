"""Durable runs survive kill -9: real ``loom run`` processes, a real scripted
OpenAI-compatible server that counts requests, the SQLite journal.

The agent is a CognitiveAgent that calls a Python tool with a side effect (a line
appended to a ledger), then ``fs:write_file``, then answers. Gates (files the test
opens) hold the run at each boundary; the test kills the process there with SIGKILL,
runs ``loom run`` again, and checks: the right answer, no answered LLM request sent
again, the side effect exactly once (or ``ToolInDoubt`` when the process died inside
the tool), and one trace id for every span of the run across both processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripted_openai import ScriptedOpenAI, text_reply, tool_call_reply

AGENT = '''
import asyncio, os, pathlib
from loom.cognitive import CognitiveAgent, CognitiveConfig
from loom.llm import LLMProvider
from loom.tools import current_call, tool

GATES = pathlib.Path(os.environ["GATES"])
LEDGER = pathlib.Path(os.environ["LEDGER"])

def reached(name):
    (GATES / f"{name}.reached").touch()

def is_open(name):
    return (GATES / f"{name}.open").exists()

@tool("side:append")
def append(line: str) -> str:
    """Appends a line to the ledger (a side effect: a payment, an e-mail)."""
    call = current_call()
    with LEDGER.open("a") as f:
        f.write(f"{line} {call.call_id}\\n")
    if not is_open("in_tool"):
        reached("in_tool")
        while not is_open("in_tool"):
            import time; time.sleep(0.05)
    return "appended"

async def permission(name, arguments):
    gate = "before_" + name.replace(":", "_")
    if not is_open(gate):
        reached(gate)
        while not is_open(gate):
            await asyncio.sleep(0.05)
    return True

async def on_event(ctx, topic, event):
    llm = LLMProvider.from_name(ctx, "scripted")
    agent = CognitiveAgent(
        ctx, llm, CognitiveConfig(max_iterations=6, tool_timeout=30),
        tools=["side:append", "fs:write_file"], permission_callback=permission,
    )
    result = await agent.run(event.payload["question"])
    await ctx.reply(event, "answer", {"summary": result.answer})
'''

GATES = ("before_side_append", "in_tool", "before_fs_write_file")


def script(body: dict[str, Any]) -> dict[str, Any]:
    """Decides from the conversation, so a replayed run and a live one get the same
    answers for the same state."""
    tool_messages = [m for m in body["messages"] if m.get("role") == "tool"]
    if not tool_messages:
        return tool_call_reply("call_pay", "side__append", {"line": "paid"})
    if len(tool_messages) == 1:
        return tool_call_reply(
            "call_write", "fs__write_file", {"path": "answer.txt", "content": "done"}
        )
    return text_reply("final: " + " | ".join(str(m.get("content"))[:300] for m in tool_messages))


@pytest.fixture
def llm() -> Iterator[ScriptedOpenAI]:
    server = ScriptedOpenAI(script).start()
    try:
        yield server
    finally:
        server.stop()


def make_project(root: Path, base_url: str, extra: str = "") -> Path:
    (root / "agents").mkdir(parents=True)
    (root / "workspace").mkdir()
    (root / "gates").mkdir()
    (root / "agents" / "desk.py").write_text(AGENT)
    (root / "loom.toml").write_text(
        f"""
[project]
name = "durable-desk"

[llm.scripted]
base_url = "{base_url}"
model = "scripted"
max_retries = 0

[durability]
store = "sqlite"
lease = 3

[agents.desk]
code = "agents/desk.py"
topics = ["desk.ask"]

[job]
topic = "desk.ask"
payload = {{ question = "Pay and write the answer." }}
timeout = 60
{extra}
"""
    )
    return root


def loom_run(root: Path, log: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GATES": str(root / "gates"),
        "LEDGER": str(root / "ledger.txt"),
        "LOOM_PROJECT": str(root / "loom.toml"),
    }
    out = (root / f"{log}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "loom", "run"], cwd=root, env=env, stdout=out, stderr=out
    )


def wait_for(path: Path, proc: subprocess.Popen[bytes], root: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            logs = "\n".join(p.read_text() for p in root.glob("*.log"))
            raise AssertionError(f"loom run exited ({proc.returncode}) first:\n{logs}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path.name} not reached in {timeout}s")
        time.sleep(0.05)


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


def open_gates(root: Path) -> None:
    for gate in GATES:
        (root / "gates" / f"{gate}.open").touch()


def finish(root: Path, proc: subprocess.Popen[bytes], log: str) -> str:
    try:
        code = proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError((root / f"{log}.log").read_text()) from None
    text = (root / f"{log}.log").read_text()
    assert code == 0, text
    return text


def ledger(root: Path) -> list[str]:
    path = root / "ledger.txt"
    return path.read_text().splitlines() if path.exists() else []


def run_spans(root: Path) -> list[dict[str, Any]]:
    """Every span of every trace file the runs wrote."""
    spans = []
    for path in sorted((root / ".loom" / "traces").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            for rs in json.loads(line).get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    spans.extend(ss.get("spans", []))
    return spans


def assert_one_trace(root: Path, *, files: int = 2) -> None:
    assert len(list((root / ".loom" / "traces").glob("*.jsonl"))) == files
    spans = run_spans(root)
    names = {s["name"] for s in spans}
    assert "invoke_agent desk" in names and "execute_tool fs:write_file" in names, names
    assert any(n.startswith("chat ") for n in names), names
    traces = {s["traceId"] for s in spans}
    assert len(traces) == 1, {s["name"]: s["traceId"] for s in spans}
    assert any(e.get("name") == "loom.run.resumed" for s in spans for e in s.get("events", [])), (
        "no span marks the resume"
    )


def crash_at(root: Path, gate: str, llm: ScriptedOpenAI) -> int:
    """Runs until ``gate`` is reached, kills -9 there; returns the requests answered."""
    first = loom_run(root, "first")
    wait_for(root / "gates" / f"{gate}.reached", first, root)
    kill_9(first)
    return llm.count


@pytest.mark.parametrize("gate", ["before_side_append", "before_fs_write_file"])
def test_kill_9_between_steps_resumes_without_repeating_anything(
    tmp_path: Path, llm: ScriptedOpenAI, gate: str
) -> None:
    root = make_project(tmp_path / "p", llm.base_url)
    for g in GATES[: GATES.index(gate)]:
        (root / "gates" / f"{g}.open").touch()
    answered = crash_at(root, gate, llm)
    assert answered == (1 if gate == "before_side_append" else 2)
    assert ledger(root) == ([] if gate == "before_side_append" else ["paid call_pay"])

    open_gates(root)
    text = finish(root, loom_run(root, "second"), "second")
    assert "resuming run" in text
    assert "final: appended" in text
    assert llm.count == 3, [len(r["messages"]) for r in llm.requests]
    assert ledger(root) == ["paid call_pay"]  # the side effect happened exactly once
    assert (root / "workspace" / "answer.txt").read_text() == "done"
    assert_one_trace(root)


def test_kill_9_inside_a_tool_raises_tool_in_doubt_not_a_second_run(
    tmp_path: Path, llm: ScriptedOpenAI
) -> None:
    root = make_project(tmp_path / "p", llm.base_url)
    (root / "gates" / "before_side_append.open").touch()
    crash_at(root, "in_tool", llm)
    assert ledger(root) == ["paid call_pay"]  # it ran, but its result was never journaled

    open_gates(root)
    text = finish(root, loom_run(root, "second"), "second")
    # The model was told; the tool was not run again.
    assert "ToolInDoubt" in text and "may or may not have run" in text
    assert ledger(root) == ["paid call_pay"]
    assert llm.count == 3
    tool_results = [m for m in llm.requests[-1]["messages"] if m.get("role") == "tool"]
    assert "may or may not have run" in tool_results[0]["content"]
    assert (root / "workspace" / "answer.txt").read_text() == "done"
    assert_one_trace(root)


def test_an_approval_waits_across_a_kill_9_and_is_given_from_another_process(
    tmp_path: Path, llm: ScriptedOpenAI
) -> None:
    root = make_project(
        tmp_path / "p", llm.base_url, '\n[tools]\nrequire_approval = ["fs:write_file"]\n'
    )
    open_gates(root)
    first = loom_run(root, "first")
    deadline = time.monotonic() + 60
    pending: list[dict[str, Any]] = []
    while not pending:
        assert first.poll() is None, (root / "first.log").read_text()
        assert time.monotonic() < deadline, "no approval requested"
        time.sleep(0.2)
        pending = json.loads(approvals(root, "list", "--json"))
    assert [(a["tool"], a["arguments"]["path"], a["status"]) for a in pending] == [
        ("fs:write_file", "answer.txt", "pending")
    ]
    assert "fs:write_file" in approvals(root, "list")
    kill_9(first)

    second = loom_run(root, "second")
    time.sleep(1.0)
    assert second.poll() is None  # waiting again for the same approval
    assert not (root / "workspace" / "answer.txt").exists()
    approval_id = pending[0]["approval_id"]
    assert approvals(root, "approve", approval_id).startswith(f"{approval_id}: approved")
    text = finish(root, second, "second")
    assert "final: appended" in text
    assert (root / "workspace" / "answer.txt").read_text() == "done"
    assert ledger(root) == ["paid call_pay"]
    assert llm.count == 3
    assert "no pending approvals" in approvals(root, "list")
    assert_one_trace(root)


def approvals(root: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "loom", "approvals", *args, "--project", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout

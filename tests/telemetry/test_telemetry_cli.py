"""`loom run` writes the run's trace file; `loom trace` lists, shows, exports and sends
it; Ctrl-C during a reactive run still flushes (subprocess tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_receivers import HttpReceiver

LOOM = [sys.executable, "-m", "loom.cli"]


def loom(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [*LOOM, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


LEAD = '''
from loom.tools import tool


@tool(name="text:shout", register=False)
async def shout(text: str) -> str:
    """Upper-cases text."""
    return text.upper()


async def on_start(ctx):
    (await ctx.runtime.get_tools()).register(shout)


async def on_event(ctx, topic, event):
    loud = await ctx.tool("text:shout", {"text": event.payload["name"]})
    reply = await ctx.request("work.greet", payload=loud, timeout=5)
    if event.payload.get("fail"):
        await ctx.reply(event, "error", {"reason": "asked to fail"})
    else:
        await ctx.reply(event, payload=reply.payload)
'''

GREETER = """
async def on_event(ctx, topic, event):
    await ctx.reply(event, payload=f"hello {event.payload}")
"""


def make_project(tmp_path: Path, job: str = 'payload = { name = "ada" }') -> Path:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "lead.py").write_text(LEAD)
    (tmp_path / "agents" / "greeter.py").write_text(GREETER)
    (tmp_path / "loom.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "cli-demo"

            [agents.lead]
            code = "agents/lead.py"
            topics = ["work.lead"]

            [agents.greeter]
            code = "agents/greeter.py"
            topics = ["work.greet"]

            [job]
            topic = "work.lead"
            {job}
            timeout = 10
            """
        )
    )
    return tmp_path


def trace_files(root: Path) -> list[Path]:
    d = root / ".loom" / "traces"
    return sorted(p for p in d.glob("*.jsonl") if not p.name.endswith(".metrics.jsonl"))


def test_run_writes_the_trace_and_trace_show_renders_it(tmp_path: Path) -> None:
    make_project(tmp_path)
    r = loom("run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "hello ADA" in r.stdout
    (path,) = trace_files(tmp_path)
    run_id = path.name.removesuffix(".jsonl")
    assert f"trace: {path}" in r.stderr and f"loom trace show {run_id}" in r.stderr
    # Every line is an ExportTraceServiceRequest for opentelemetry-proto's parser.
    lines = path.read_text().splitlines()
    assert lines
    for line in lines:
        json_format.Parse(line, ExportTraceServiceRequest())

    r = loom("trace", "list", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert run_id in r.stdout and "invoke_workflow cli-demo" in r.stdout
    assert r.stdout.splitlines()[0].split()[:3] == ["RUN", "STARTED", "SPANS"]

    r = loom("trace", "show", run_id[:12], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for name in (
        "invoke_workflow cli-demo",
        "send work.lead",
        "invoke_agent lead",
        "execute_tool text:shout",
        "send work.greet",
        "invoke_agent greeter",
    ):
        assert name in out, out
    # A tree: the tool call is indented under the agent that made it.
    lines = out.splitlines()
    lead = next(i for i, ln in enumerate(lines) if "invoke_agent lead" in ln)
    tool = next(i for i, ln in enumerate(lines) if "execute_tool text:shout" in ln)
    assert tool > lead
    assert lines[tool].index("execute_tool") > lines[lead].index("invoke_agent")
    assert "0 error(s)" in out and " ms" in out


def test_export_jaeger_json(tmp_path: Path) -> None:
    make_project(tmp_path)
    assert loom("run", cwd=tmp_path).returncode == 0
    out = tmp_path / "jaeger.json"
    r = loom("trace", "export", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    (t,) = doc["data"]
    spans = t["spans"]
    ids = {s["spanID"] for s in spans}
    assert len(t["traceID"]) == 32 and all(s["traceID"] == t["traceID"] for s in spans)
    assert t["processes"]["p1"]["serviceName"] == "cli-demo"
    roots = [s for s in spans if not s["references"]]
    assert [s["operationName"] for s in roots] == ["invoke_workflow cli-demo"]
    for s in spans:
        assert s["processID"] in t["processes"]
        assert isinstance(s["startTime"], int) and isinstance(s["duration"], int)
        for ref in s["references"]:
            assert ref["refType"] == "CHILD_OF" and ref["spanID"] in ids
        for tag in s["tags"]:
            assert tag["type"] in {"string", "bool", "int64", "float64"}
    kinds = {tag["value"] for s in spans for tag in s["tags"] if tag["key"] == "span.kind"}
    assert {"producer", "consumer"} <= kinds
    # The merged OTLP/JSON form is a single request.
    r = loom("trace", "export", "--format", "otlp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    merged = json_format.Parse(r.stdout, ExportTraceServiceRequest())
    n = sum(len(ss.spans) for rs in merged.resource_spans for ss in rs.scope_spans)
    assert n == len(spans)


def test_send_posts_json_to_an_otlp_http_endpoint(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    make_project(tmp_path)
    assert loom("run", cwd=tmp_path).returncode == 0
    (path,) = trace_files(tmp_path)
    r = loom("trace", "send", str(path), "--endpoint", http_receiver.endpoint, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    expected = path.read_text().count('"spanId"')
    assert f"sent {expected} span(s)" in r.stdout
    assert http_receiver.received
    assert all(x.content_type == "application/json" for x in http_receiver.received)
    names = {s.name for s in http_receiver.spans()}
    assert "invoke_workflow cli-demo" in names and "execute_tool text:shout" in names
    assert len(http_receiver.spans()) == expected
    # An endpoint that is not there is an error, not silence.
    r = loom("trace", "send", str(path), "--endpoint", "http://127.0.0.1:9/v1/traces", cwd=tmp_path)
    assert r.returncode == 1 and "POST" in r.stderr


def test_failed_job_is_an_error_in_the_tree(tmp_path: Path) -> None:
    make_project(tmp_path, 'payload = { name = "bob", fail = true }')
    r = loom("run", cwd=tmp_path)
    assert r.returncode == 1
    r = loom("trace", "show", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    root = next(ln for ln in r.stdout.splitlines() if "invoke_workflow" in ln)
    assert "ERROR" in root and "job failed" in root
    assert "1 error(s)" in r.stdout


def test_bad_exporter_stops_loom_run_with_key_and_line(tmp_path: Path) -> None:
    make_project(tmp_path)
    with open(tmp_path / "loom.toml", "a") as f:
        f.write('\n[telemetry]\nexporters = ["file", "jaegr"]\n')
    r = loom("run", cwd=tmp_path)
    assert r.returncode == 2
    assert "loom.toml:" in r.stderr and "[telemetry.exporters]" in r.stderr
    assert "unknown exporter 'jaegr'" in r.stderr


def test_trace_show_without_runs(tmp_path: Path) -> None:
    r = loom("trace", "show", cwd=tmp_path)
    assert r.returncode == 1 and "no runs" in r.stderr
    assert loom("trace", "list", cwd=tmp_path).stdout.startswith("no runs")


REACTIVE_TICKER = """
import asyncio


async def main(ctx):
    n = 0
    while True:
        await ctx.emit("tick.n", payload=n)
        n += 1
        await asyncio.sleep(0.02)
"""

REACTIVE_COUNTER = """
from pathlib import Path


async def on_event(ctx, topic, event):
    with open(Path(ctx.config["out"]), "a") as f:
        f.write(f"{event.payload}\\n")
"""


def test_sigint_during_a_reactive_run_flushes(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "ticker.py").write_text(REACTIVE_TICKER)
    (tmp_path / "agents" / "counter.py").write_text(REACTIVE_COUNTER)
    handled = tmp_path / "handled.txt"
    (tmp_path / "loom.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "reactive"

            [agents.ticker]
            code = "agents/ticker.py"

            [agents.counter]
            code = "agents/counter.py"
            topics = ["tick.>"]
            out = "{handled}"
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen(
        [*LOOM, "run"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if handled.exists() and len(handled.read_text().splitlines()) >= 20:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the agents did not handle 20 events in 30 s")
        # Well under the batch processor's 5 s delay: nothing was exported yet.
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    (path,) = trace_files(tmp_path)
    seen = {int(x) for x in handled.read_text().split()}
    text = path.read_text()
    for line in text.splitlines():
        json_format.Parse(line, ExportTraceServiceRequest())
    from loom.telemetry.otlp_json import read_spans

    spans = read_spans(path)
    handled_spans = [s for s in spans if s.name == "invoke_agent counter"]
    # Every event the counter handled is in the file (it may have handled one more
    # between the last read and the signal).
    assert len(handled_spans) >= len(seen) >= 20
    root = [s for s in spans if s.name == "invoke_workflow reactive"]
    assert len(root) == 1 and root[0].attributes.get("loom.run.interrupted") is None
    assert {s.trace_id for s in handled_spans} == {root[0].trace_id}

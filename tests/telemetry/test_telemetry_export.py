"""A multi-agent run over the real bus, exported to real OTLP receivers on 127.0.0.1
(HTTP with protobuf bodies, and gRPC): one trace, the right tree and attributes,
content only when opted in, no API key in any exported byte, and the GenAI and bus
metrics."""

from __future__ import annotations

import secrets
import textwrap
from pathlib import Path
from typing import Any

import pytest
from otlp_receivers import GrpcReceiver, HttpReceiver, ProtoSpan, ScriptedOpenAIServer

from loom.app import EXIT_OK, run_project
from loom.config import ProjectConfig, parse_project_config
from loom.testing import tool_call

PLANNER = '''
from loom.llm import LLMProvider
from loom.tools import tool


@tool(name="calc:add", register=False)
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


async def on_start(ctx):
    (await ctx.runtime.get_tools()).register(add)


async def on_event(ctx, topic, event):
    llm = LLMProvider.from_name(ctx, "fake")
    messages = [{"role": "user", "content": event.payload["question"]}]
    first = await llm.call(messages, tools=[add.spec.to_openai()])
    call = first.tool_calls[0]
    result = await ctx.tool(call.name, call.arguments, call_id=call.id)
    messages.append({"role": "assistant", "content": None, "tool_calls": [call.to_wire()]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": str(result)})
    final = await llm.call(messages)
    written = await ctx.request("task.write", payload={"draft": final.content}, timeout=5)
    await ctx.reply(event, payload={"answer": written.payload, "sum": result})
'''

WRITER = """
async def on_event(ctx, topic, event):
    await ctx.reply(event, payload=event.payload["draft"].upper())
"""

QUESTION = "What is 2+3? PROMPT-MARKER-7f3a"
ANSWER = "The answer is 5. COMPLETION-MARKER-91c2"


def make_project(tmp_path: Path, llm_url: str, api_key: str, telemetry: str) -> ProjectConfig:
    (tmp_path / "agents").mkdir(exist_ok=True)
    (tmp_path / "agents" / "planner.py").write_text(PLANNER)
    (tmp_path / "agents" / "writer.py").write_text(WRITER)
    source = textwrap.dedent(
        f"""
        [project]
        name = "trace-demo"

        [agents.planner]
        code = "agents/planner.py"
        topics = ["task.plan"]

        [agents.writer]
        code = "agents/writer.py"
        topics = ["task.write"]

        [llm.fake]
        base_url = "{llm_url}"
        model = "scripted-model"
        api_key = "{api_key}"
        max_retries = 0

        [job]
        topic = "task.plan"
        payload = {{ question = "{QUESTION}" }}
        timeout = 10
        """
    ) + textwrap.dedent(telemetry)
    path = tmp_path / "loom.toml"
    path.write_text(source)
    return parse_project_config(source, path)


def by_name(spans: list[ProtoSpan]) -> dict[str, list[ProtoSpan]]:
    out: dict[str, list[ProtoSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def one(spans: dict[str, list[ProtoSpan]], name: str, **attrs: Any) -> ProtoSpan:
    """The one span called ``name`` whose attributes include ``attrs`` (keys with
    ``_`` for ``.``)."""
    want = {k.replace("__", "."): v for k, v in attrs.items()}
    found = [
        s for s in spans.get(name, []) if all(s.attributes.get(k) == v for k, v in want.items())
    ]
    assert len(found) == 1, (name, want, sorted(spans))
    return found[0]


async def run_scenario(
    tmp_path: Path, receiver: Any, exporter: str, capture: bool
) -> tuple[list[ProtoSpan], str, ScriptedOpenAIServer]:
    api_key = "sk-loomtest-" + secrets.token_hex(12)
    llm = ScriptedOpenAIServer([tool_call("calc__add", a=2, b=3), ANSWER])
    try:
        project = make_project(
            tmp_path,
            llm.base_url,
            api_key,
            f"""
            [telemetry]
            exporters = ["{exporter}", "file"]
            endpoint = "{receiver.endpoint}"
            capture_content = {"true" if capture else "false"}
            metrics_interval = 60
            """,
        )
        result = await run_project(project, install_signal_handlers=False)
    finally:
        llm.close()
    assert result.exit_code == EXIT_OK, result.message
    assert result.reply is not None
    assert result.reply.payload == {"answer": ANSWER.upper(), "sum": 5}
    # The key was really used: the model server saw it.
    assert llm.authorizations == [f"Bearer {api_key}"] * 2
    # shutdown() flushed before run_project returned: nothing to wait for.
    return receiver.spans(), api_key, llm


def check_tree(spans: list[ProtoSpan]) -> None:
    names = by_name(spans)
    assert len({s.trace_id for s in spans}) == 1, sorted({(s.trace_id, s.name) for s in spans})
    root = one(names, "invoke_workflow trace-demo")
    assert root.parent_id == ""
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["gen_ai.workflow.name"] == "trace-demo"
    assert root.resource["service.name"] == "trace-demo"
    send_job = one(names, "send task.plan")
    planner = one(names, "invoke_agent planner", messaging__destination__name="task.plan")
    writer = one(names, "invoke_agent writer")
    send_write = one(names, "send task.write")
    chats = names["chat scripted-model"]
    tool = one(names, "execute_tool calc:add")
    assert send_job.parent_id == root.span_id and send_job.kind == 4  # PRODUCER
    assert planner.parent_id == send_job.span_id and planner.kind == 5  # CONSUMER
    assert len(chats) == 2 and all(c.parent_id == planner.span_id for c in chats)
    assert tool.parent_id == planner.span_id
    assert send_write.parent_id == planner.span_id
    assert writer.parent_id == send_write.span_id
    # The writer's reply travels back to the planner inside the same trace.
    replies = [s for s in spans if s.name.startswith("send _INBOX.planner")]
    assert len(replies) == 1 and replies[0].parent_id == writer.span_id
    job_reply = [s for s in spans if s.name.startswith("send _INBOX.loom_run")]
    assert len(job_reply) == 1 and job_reply[0].parent_id == planner.span_id

    for c in chats:
        a = c.attributes
        assert c.kind == 3  # CLIENT
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "scripted-model"
        assert a["gen_ai.response.model"] == "scripted-model"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["server.address"] == "127.0.0.1" and a["server.port"] > 0
        assert a["llm.provider"] == "fake" and a["llm.model"] == "scripted-model"
    reasons = {tuple(c.attributes["gen_ai.response.finish_reasons"]) for c in chats}
    assert reasons == {("tool_calls",), ("stop",)}
    t = tool.attributes
    assert t["gen_ai.tool.name"] == "calc:add" and t["gen_ai.operation.name"] == "execute_tool"
    assert t["gen_ai.tool.call.id"].startswith("call_test_")
    assert t["loom.tool.outcome"] == "ok"
    assert planner.attributes["gen_ai.agent.name"] == "planner"
    assert all(s.status_code != 2 for s in spans)


@pytest.mark.parametrize("exporter", ["otlp-http", "otlp-grpc"])
async def test_multi_agent_run_is_one_trace(
    tmp_path: Path,
    exporter: str,
    http_receiver: HttpReceiver,
    grpc_receiver: GrpcReceiver,
) -> None:
    receiver = http_receiver if exporter == "otlp-http" else grpc_receiver
    spans, api_key, _ = await run_scenario(tmp_path, receiver, exporter, capture=False)
    check_tree(spans)
    raw = receiver.raw
    assert raw, "nothing arrived"
    # Content is opt-in: neither the prompt, the completion nor tool arguments are here.
    assert b"PROMPT-MARKER" not in raw and b"COMPLETION-MARKER" not in raw
    for s in spans:
        assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & set(s.attributes)
        assert "gen_ai.tool.call.arguments" not in s.attributes
    assert api_key.encode() not in raw
    # The same spans went to the file as well.
    files = list((tmp_path / ".loom" / "traces").glob("*.jsonl"))
    trace_files = [f for f in files if not f.name.endswith(".metrics.jsonl")]
    assert len(trace_files) == 1
    text = trace_files[0].read_text()
    assert api_key not in text and "PROMPT-MARKER" not in text
    assert text.count('"spanId"') == len(spans)


@pytest.mark.parametrize("exporter", ["otlp-http", "otlp-grpc"])
async def test_content_only_when_opted_in_and_never_the_key(
    tmp_path: Path,
    exporter: str,
    http_receiver: HttpReceiver,
    grpc_receiver: GrpcReceiver,
) -> None:
    receiver = http_receiver if exporter == "otlp-http" else grpc_receiver
    spans, api_key, _ = await run_scenario(tmp_path, receiver, exporter, capture=True)
    check_tree(spans)
    names = by_name(spans)
    chats = names["chat scripted-model"]
    inputs = " ".join(c.attributes["gen_ai.input.messages"] for c in chats)
    outputs = " ".join(c.attributes["gen_ai.output.messages"] for c in chats)
    assert "PROMPT-MARKER-7f3a" in inputs and "COMPLETION-MARKER-91c2" in outputs
    tool = one(names, "execute_tool calc:add")
    assert '"a": 2' in tool.attributes["gen_ai.tool.call.arguments"]
    assert tool.attributes["gen_ai.tool.call.result"] == "5"
    # Opted in or not, secrets never travel.
    raw = receiver.raw
    assert b"PROMPT-MARKER-7f3a" in raw
    assert api_key.encode() not in raw
    assert b"Bearer" not in raw and b"sk-loomtest" not in raw


async def test_metrics_arrive(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    await run_scenario(tmp_path, http_receiver, "otlp-http", capture=False)
    names = http_receiver.metric_names()
    assert {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "loom.bus.published",
        "loom.bus.delivered",
        "loom.bus.dropped",
    } <= names, names
    (duration,) = http_receiver.metrics("gen_ai.client.operation.duration")
    points = duration.histogram.data_points
    assert sum(p.count for p in points) == 2
    attrs = {kv.key: kv.value.string_value for kv in points[0].attributes}
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "scripted-model"
    (tokens,) = http_receiver.metrics("gen_ai.client.token.usage")
    types = {
        kv.value.string_value
        for p in tokens.histogram.data_points
        for kv in p.attributes
        if kv.key == "gen_ai.token.type"
    }
    assert types == {"input", "output"}
    (published,) = http_receiver.metrics("loom.bus.published")
    # job, request to the writer, two replies
    assert published.sum.data_points[0].as_int >= 4

"""The full chain of issue 5 with the Rust sandbox: agent → chat → system:shell (a
sandboxed process, whose spans are recorded in Rust) → reply to a second agent, as one
trace at a real OTLP/HTTP receiver.

Skips, saying why, until ``loom._core`` exports ``NativeTools`` and ``loom.tools.native``
registers them; nothing here is mocked, so it turns on by itself when they land.
"""

from __future__ import annotations

import secrets
import textwrap
from pathlib import Path

import pytest
from otlp_receivers import HttpReceiver, ScriptedOpenAIServer

from loom import _core
from loom.app import EXIT_OK, run_project
from loom.config import parse_project_config
from loom.testing import tool_call

OPERATOR = """
from loom.llm import LLMProvider


async def on_event(ctx, topic, event):
    llm = LLMProvider.from_name(ctx, "fake")
    specs = [s.to_openai() for s in await ctx.tools() if s.name == "system:shell"]
    messages = [{"role": "user", "content": "say hello from the sandbox"}]
    first = await llm.call(messages, tools=specs)
    call = first.tool_calls[0]
    result = await ctx.tool(call.name, call.arguments, call_id=call.id)
    report = await ctx.request("ops.report", payload=result["stdout"], timeout=5)
    await ctx.reply(event, payload={"reported": report.payload, "exit": result["exit_code"]})
"""

REPORTER = """
async def on_event(ctx, topic, event):
    await ctx.reply(event, payload="report: " + event.payload.strip())
"""


async def test_agent_chat_shell_reply_is_one_trace(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    if not hasattr(_core, "NativeTools"):
        reason = "loom._core has no NativeTools yet (the Rust sandboxed tools are not wired)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    api_key = "sk-loomtest-" + secrets.token_hex(12)
    llm = ScriptedOpenAIServer(
        [tool_call("system__shell", argv=["echo", "hello from the sandbox"]), "done"]
    )
    (tmp_path / "agents").mkdir()
    (tmp_path / "workspace").mkdir()
    (tmp_path / "agents" / "operator.py").write_text(OPERATOR)
    (tmp_path / "agents" / "reporter.py").write_text(REPORTER)
    source = textwrap.dedent(
        f"""
        [project]
        name = "native-chain"

        [workspace]
        root = "workspace"

        [agents.operator]
        code = "agents/operator.py"
        topics = ["ops.run"]

        [agents.reporter]
        code = "agents/reporter.py"
        topics = ["ops.report"]

        [llm.fake]
        base_url = "{llm.base_url}"
        model = "scripted-model"
        api_key = "{api_key}"
        max_retries = 0

        [telemetry]
        exporters = ["otlp-http"]
        endpoint = "{http_receiver.endpoint}"
        metrics = false

        [job]
        topic = "ops.run"
        timeout = 20
        """
    )
    (tmp_path / "loom.toml").write_text(source)
    project = parse_project_config(source, tmp_path / "loom.toml")
    try:
        from loom import Runtime

        runtime = Runtime(project)
        if "system:shell" not in await runtime.get_tools():
            reason = "loom._core has NativeTools but loom.tools.native does not register them yet"
            print(f"SKIP: {reason}")
            await runtime.stop()
            pytest.skip(reason)
        result = await run_project(project, runtime=runtime, install_signal_handlers=False)
    finally:
        llm.close()
    assert result.exit_code == EXIT_OK, result.message
    assert result.reply is not None
    assert result.reply.payload == {"reported": "report: hello from the sandbox", "exit": 0}

    spans = http_receiver.spans()
    assert len({s.trace_id for s in spans}) == 1
    by_id = {s.span_id: s for s in spans}
    agent = next(
        s
        for s in spans
        if s.name == "invoke_agent operator"
        and s.attributes.get("messaging.destination.name") == "ops.run"
    )
    chat = next(s for s in spans if s.name == "chat scripted-model")
    shell = next(s for s in spans if s.name == "execute_tool system:shell")
    assert chat.parent_id == agent.span_id and shell.parent_id == agent.span_id
    assert shell.attributes["gen_ai.tool.name"] == "system:shell"
    # Recorded in Rust, emitted through the Python SDK as children of the tool span.
    rust = [s for s in spans if s.parent_id == shell.span_id]
    process = next(s for s in rust if s.name == "sandbox.process")
    assert process.attributes["loom.process.argv0"] == "echo"
    assert process.attributes["loom.process.exit_code"] == 0
    assert process.trace_id == shell.trace_id
    send_report = next(s for s in spans if s.name == "send ops.report")
    reporter = next(s for s in spans if s.name == "invoke_agent reporter")
    assert send_report.parent_id == agent.span_id
    assert reporter.parent_id == send_report.span_id
    # Walks up to the run's root.
    node = process
    while node.parent_id:
        node = by_id[node.parent_id]
    assert node.name == "invoke_workflow native-chain"
    assert api_key.encode() not in http_receiver.raw

"""Tracing state belongs to the runtime: two runtimes in one process trace (and capture
content) independently."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom import Agent, Runtime
from loom.telemetry import Telemetry, capture_content, refresh_tracing_active, tracing_active
from loom.tools import tool


@tool(name="calc:add", register=False)
async def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


async def run_once(runtime: Runtime, agent_id: str) -> None:
    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        result = await ctx.tool("calc:add", {"a": 2, "b": 3})
        await ctx.reply(event, payload=result)

    worker = Agent(agent_id, topics=[agent_id], tools=[add], on_event=on_event, runtime=runtime)
    async with worker, Agent(f"{agent_id}-client", runtime=runtime) as client:
        reply = await client.ctx.request(agent_id, payload="go", timeout=5)
    assert reply.payload == 5
    await runtime.stop(timeout=5)


async def test_two_runtimes_trace_independently() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced, plain = Runtime(), Runtime()
    traced.telemetry = Telemetry(tracer_provider=provider, capture=True)
    assert traced.telemetry.active and not plain.telemetry.active
    assert not tracing_active() and not capture_content()  # the process default is untouched
    try:
        await run_once(traced, "traced")
        await run_once(plain, "plain")
    finally:
        provider.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert "invoke_agent traced" in spans and "execute_tool calc:add" in spans
    assert not any("plain" in name for name in spans), sorted(spans)
    tool_attrs = spans["execute_tool calc:add"].attributes or {}
    assert tool_attrs["gen_ai.tool.call.arguments"] == '{"a": 2, "b": 3}'
    assert tool_attrs["gen_ai.tool.call.result"] == "5"


async def test_refresh_reaches_existing_runtimes() -> None:
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    rt = Runtime()
    assert not rt.telemetry.active
    provider = TracerProvider()
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)  # an application's own provider
    try:
        assert refresh_tracing_active() and rt.telemetry.active
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
        refresh_tracing_active()
    assert not rt.telemetry.active
    await rt.stop(timeout=5)

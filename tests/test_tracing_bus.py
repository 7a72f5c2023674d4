"""Trace context crosses the bus: request → handler → nested request → reply is one
trace with the right parents."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom import Agent, Runtime
from loom.telemetry import refresh_tracing_active, tracing_active


async def test_request_chain_is_one_trace(
    span_exporter: InMemorySpanExporter, runtime: Runtime
) -> None:
    async def leaf(ctx, topic, event):  # type: ignore[no-untyped-def]
        await ctx.reply(event, payload="leaf")

    async def middle(ctx, topic, event):  # type: ignore[no-untyped-def]
        inner = await ctx.request("leaf", timeout=2)
        await ctx.reply(event, payload=f"middle+{inner.payload}")

    tracer = trace.get_tracer("test")
    async with (
        Agent("leaf", topics=["leaf"], on_event=leaf),
        Agent("middle", topics=["middle"], on_event=middle),
        Agent("client") as client,
    ):
        with tracer.start_as_current_span("root") as root:
            reply = await client.ctx.request("middle", timeout=2)
    assert reply.payload == "middle+leaf"
    assert "traceparent" in reply.headers

    finished = span_exporter.get_finished_spans()
    by_name = {s.name: s for s in finished}
    trace_ids = {s.context.trace_id for s in finished}
    assert trace_ids == {root.get_span_context().trace_id}, [s.name for s in finished]
    mid = by_name["invoke_agent middle"]
    leaf_span = by_name["invoke_agent leaf"]
    send_middle = by_name["send middle"]
    send_leaf = by_name["send leaf"]
    assert (
        send_middle.parent is not None
        and send_middle.parent.span_id == root.get_span_context().span_id
    )
    assert mid.parent is not None and mid.parent.span_id == send_middle.context.span_id
    assert send_leaf.parent is not None and send_leaf.parent.span_id == mid.context.span_id
    assert leaf_span.parent is not None and leaf_span.parent.span_id == send_leaf.context.span_id
    assert mid.attributes is not None
    assert mid.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert mid.attributes["messaging.destination.name"] == "middle"
    assert mid.kind == trace.SpanKind.CONSUMER and send_middle.kind == trace.SpanKind.PRODUCER


async def test_handler_error_marks_the_span(
    span_exporter: InMemorySpanExporter, runtime: Runtime
) -> None:
    async def bad(ctx, topic, event):  # type: ignore[no-untyped-def]
        raise ValueError("nope")

    tracer = trace.get_tracer("test")
    async with Agent("bad", topics=["bad"], on_event=bad), Agent("c") as c:
        with tracer.start_as_current_span("root"):
            await c.ctx.emit("bad")
        for _ in range(100):
            if any(s.name == "invoke_agent bad" for s in span_exporter.get_finished_spans()):
                break
            await asyncio.sleep(0.01)
    names = [s.name for s in span_exporter.get_finished_spans()]
    assert "invoke_agent bad" in names, names
    span = next(s for s in span_exporter.get_finished_spans() if s.name == "invoke_agent bad")
    assert span.status.status_code == trace.StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "ValueError"


def test_untraced_by_default() -> None:
    refresh_tracing_active()
    assert tracing_active() is False


async def test_replies_do_not_get_their_own_agent_span(
    span_exporter: InMemorySpanExporter, runtime: Runtime
) -> None:
    async def echo(ctx, topic, event):  # type: ignore[no-untyped-def]
        await ctx.reply(event, payload=1)

    async with Agent("svc", topics=["svc"], on_event=echo), Agent("caller") as caller:
        with trace.get_tracer("test").start_as_current_span("root"):
            await caller.ctx.request("svc", timeout=2)
    names = [s.name for s in span_exporter.get_finished_spans()]
    assert names.count("invoke_agent svc") == 1
    assert "invoke_agent caller" not in names, names

"""Trace context crosses the bus: request → handler → nested request → reply is one
trace with the right parents."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom import Agent, Runtime
from loom.telemetry import bus_spans, refresh_tracing_active, set_bus_spans, tracing_active


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


async def _traced_run(span_exporter: InMemorySpanExporter) -> tuple[list[str], Any, Any]:
    """client → request "middle" → request "leaf" → replies; plus a plain emit to
    "sink". Every handler opens a span of its own. Returns the finished span names
    (sorted), the root span and the finished spans by name."""
    sunk = asyncio.Event()
    tracer = trace.get_tracer("test")

    async def leaf(ctx, topic, event):  # type: ignore[no-untyped-def]
        with tracer.start_as_current_span("leaf work"):
            await ctx.reply(event, payload="leaf")

    async def middle(ctx, topic, event):  # type: ignore[no-untyped-def]
        with tracer.start_as_current_span("middle work"):
            inner = await ctx.request("leaf", timeout=2)
        await ctx.reply(event, payload=f"middle+{inner.payload}")

    async def sink(ctx, topic, event):  # type: ignore[no-untyped-def]
        with tracer.start_as_current_span("sink work"):
            sunk.set()

    async with (
        Agent("leaf", topics=["leaf"], on_event=leaf),
        Agent("middle", topics=["middle"], on_event=middle),
        Agent("sink", topics=["sink"], on_event=sink),
        Agent("client") as client,
    ):
        with tracer.start_as_current_span("root") as root:
            reply = await client.ctx.request("middle", timeout=2)
            await client.ctx.emit("sink")
        await asyncio.wait_for(sunk.wait(), 2)
        for _ in range(100):  # the sink's span ends just after the event is set
            if any(s.name == "sink work" for s in span_exporter.get_finished_spans()):
                break
            await asyncio.sleep(0.01)
    assert reply.payload == "middle+leaf"
    finished = span_exporter.get_finished_spans()
    assert {s.context.trace_id for s in finished} == {root.get_span_context().trace_id}
    return sorted(s.name for s in finished), root, {s.name: s for s in finished}


def _parent(spans: dict[str, Any], name: str) -> int:
    parent = spans[name].parent
    assert parent is not None, name
    return int(parent.span_id)


@pytest.mark.parametrize("level", ["all", "requests", "none"])
async def test_bus_spans_levels_make_exactly_their_spans(
    level: str, span_exporter: InMemorySpanExporter, runtime: Runtime
) -> None:
    work = ["leaf work", "middle work", "root", "sink work"]
    handlers = ["invoke_agent leaf", "invoke_agent middle", "invoke_agent sink"]
    requests = ["send leaf", "send middle"]
    # Replies go to the requester's inbox; their send spans are named after it.
    expected = {
        "all": sorted(work + handlers + requests + ["send sink", "send _INBOX"]),
        "requests": sorted(work + handlers + requests),
        "none": sorted(work),
    }[level]
    saved = bus_spans()
    set_bus_spans(level)
    try:
        names, root, spans = await _traced_run(span_exporter)
    finally:
        set_bus_spans(saved)
    if level == "all":
        # Two replies (leaf → middle, middle → client), each a send to an inbox.
        inbox_sends = [n for n in names if n.startswith("send _INBOX.")]
        assert len(inbox_sends) == 2, names
        names = sorted([n for n in names if not n.startswith("send _INBOX.")] + ["send _INBOX"])
    assert names == expected, names
    root_id = root.get_span_context().span_id
    if level == "none":
        # No bus spans, but one trace: each handler ran in its sender's context.
        assert _parent(spans, "middle work") == root_id
        assert _parent(spans, "leaf work") == spans["middle work"].context.span_id
        assert _parent(spans, "sink work") == root_id
    else:
        assert _parent(spans, "invoke_agent middle") == spans["send middle"].context.span_id
        assert _parent(spans, "leaf work") == spans["invoke_agent leaf"].context.span_id
        sink_parent = spans["send sink"].context.span_id if level == "all" else root_id
        assert _parent(spans, "invoke_agent sink") == sink_parent


def test_set_bus_spans_refuses_unknown_levels() -> None:
    with pytest.raises(ValueError, match="bus_spans"):
        set_bus_spans("some")

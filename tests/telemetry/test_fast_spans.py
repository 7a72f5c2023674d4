"""Loom's own spans (``LoomSpan``, made without the SDK tracer) behave like SDK spans
for everything that consumes them: nesting with user spans, the provider's sampler,
span processors and exporters, limits, and the SDK's attribute rules. And the direct
``traceparent`` codec matches OpenTelemetry's propagator."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import DefaultGetter, DefaultSetter
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from loom import Agent, Runtime
from loom.telemetry.agent_spans import invoke_agent_span, publish_span
from loom.telemetry.fast_spans import LoomSpan, fast_tracer
from loom.telemetry.otlp_json import encode_span
from loom.telemetry.propagation import extract_context, inject_context
from loom.telemetry.state import Telemetry
from loom.telemetry.tool_spans import tool_span


def _provider(**kw: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**kw)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


class _Event:
    topic = "jobs"
    id = "ev-1"
    type = "loom.message"
    source = "client"
    correlation_id = None

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = headers


async def test_loom_spans_and_user_spans_nest_both_ways(
    span_exporter: InMemorySpanExporter, runtime: Runtime
) -> None:
    user = trace.get_tracer("user")

    async def handler(ctx, topic, event):  # type: ignore[no-untyped-def]
        # user code inside Loom's invoke_agent span
        assert isinstance(trace.get_current_span(), LoomSpan)
        with user.start_as_current_span("user work"):
            await ctx.reply(event, payload="ok")

    async with Agent("w", topics=["jobs"], on_event=handler), Agent("c") as client:
        with user.start_as_current_span("user root") as root:
            reply = await client.ctx.request("jobs", timeout=2)
    assert reply.payload == "ok"
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    send, invoke, work = spans["send jobs"], spans["invoke_agent w"], spans["user work"]
    assert isinstance(send, LoomSpan) and isinstance(invoke, LoomSpan)
    assert isinstance(spans["user root"], ReadableSpan) and not isinstance(
        spans["user root"], LoomSpan
    )
    assert send.parent is not None and send.parent.span_id == root.get_span_context().span_id
    assert invoke.parent is not None and invoke.parent.span_id == send.context.span_id
    assert invoke.parent.is_remote  # came through the event's traceparent
    assert work.parent is not None and work.parent.span_id == invoke.context.span_id
    assert {s.context.trace_id for s in spans.values()} == {root.get_span_context().trace_id}
    assert send.resource is spans["user root"].resource
    assert send.instrumentation_scope is not None and send.instrumentation_scope.name == "loom"


def test_the_provider_sampler_decides() -> None:
    # ParentBased(ALWAYS_OFF): no root span is recorded, children of a sampled parent are.
    provider, exporter = _provider(sampler=ParentBased(ALWAYS_OFF))
    tel = Telemetry(tracer_provider=provider)
    assert tel.fast_tracer() is not None
    with tool_span(tel, "t", "c1", None, {}) as handle:
        assert not handle.span.is_recording()
    assert exporter.get_finished_spans() == ()
    sampled = propagate.extract({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    with invoke_agent_span(tel, "a", _Event({"traceparent": _header(sampled)})) as span:
        assert span.is_recording()
    unsampled = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-00"}
    with invoke_agent_span(tel, "b", _Event(unsampled)) as span:
        assert not span.is_recording()
        assert span.get_span_context().trace_id == int("1" * 32, 16)
    assert [s.name for s in exporter.get_finished_spans()] == ["invoke_agent a"]


def _header(ctx: otel_context.Context) -> str:
    out: dict[str, str] = {}
    propagate.inject(out, context=ctx)
    return out["traceparent"]


class _Recording(Sampler):
    """Samples spans whose name starts with 'keep', adds an attribute, records calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, SpanKind, dict[str, Any]]] = []

    def should_sample(  # type: ignore[override]
        self,
        parent_context,
        trace_id,
        name,
        kind=None,
        attributes=None,
        links=None,
        trace_state=None,
    ) -> SamplingResult:
        self.seen.append((name, kind, dict(attributes or {})))
        if name.startswith("execute_tool keep"):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, {**(attributes or {}), "s": 1})
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "recording"


def test_a_custom_sampler_is_called_with_the_span_and_its_attributes() -> None:
    sampler = _Recording()
    provider, exporter = _provider(sampler=sampler)
    tel = Telemetry(tracer_provider=provider)
    with tool_span(tel, "keep", "c1", None, {}):
        pass
    with tool_span(tel, "drop", "c2", None, {}):
        pass
    assert [(n, k) for n, k, _ in sampler.seen] == [
        ("execute_tool keep", SpanKind.INTERNAL),
        ("execute_tool drop", SpanKind.INTERNAL),
    ]
    assert sampler.seen[0][2]["gen_ai.tool.call.id"] == "c1"
    (span,) = exporter.get_finished_spans()
    assert span.name == "execute_tool keep"
    assert span.attributes is not None and span.attributes["s"] == 1
    assert span.attributes["loom.tool.outcome"] == "ok"


def test_limits_that_could_change_attributes_keep_the_sdk_path() -> None:
    provider, exporter = _provider(span_limits=SpanLimits(max_span_attribute_length=4))
    tel = Telemetry(tracer_provider=provider)
    assert tel.fast_tracer() is None
    with tool_span(tel, "longname", "c1", None, {}):
        pass
    (span,) = exporter.get_finished_spans()
    assert not isinstance(span, LoomSpan)
    assert span.attributes is not None and span.attributes["gen_ai.tool.name"] == "long"


def test_dropped_attributes_are_counted_and_exported() -> None:
    provider, exporter = _provider(span_limits=SpanLimits(max_span_attributes=40))
    tel = Telemetry(tracer_provider=provider)
    assert tel.fast_tracer() is not None
    with tool_span(tel, "t", "c1", None, {}) as handle:
        span = handle.span
        for i in range(50):
            span.set_attribute(f"user.{i}", i)
    (done,) = exporter.get_finished_spans()
    assert isinstance(done, LoomSpan)
    assert done.attributes is not None and len(done.attributes) == 40
    assert done.dropped_attributes > 0
    assert "user.49" in done.attributes and "gen_ai.tool.name" not in done.attributes
    assert encode_span(done)["droppedAttributesCount"] == done.dropped_attributes


def test_a_full_batch_queue_still_drops_and_the_rest_is_exported() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    bsp = BatchSpanProcessor(
        exporter, max_queue_size=4, max_export_batch_size=4, schedule_delay_millis=60_000
    )
    provider.add_span_processor(bsp)
    tel = Telemetry(tracer_provider=provider)
    for i in range(10):
        with tool_span(tel, f"t{i}", str(i), None, {}):
            pass
    provider.force_flush()
    names = [s.name for s in exporter.get_finished_spans()]
    assert 0 < len(names) < 10  # the queue's limit applies to Loom's spans too
    provider.shutdown()


def test_span_api_follows_the_sdk_rules(caplog: pytest.LogCaptureFixture) -> None:
    provider, exporter = _provider()
    tel = Telemetry(tracer_provider=provider)
    sdk_tracer = provider.get_tracer("ref")
    fast = fast_tracer(tel.tracer())
    assert fast is not None

    def exercise(span: Any) -> None:
        span.set_attribute("list", [1, 2])
        span.set_attribute("obj", object())  # not a valid value: str() of it, or None
        span.set_attributes({"a": "x", "b": 2.5})
        span.set_attribute("a", "moved")  # replaced keys move to the end
        span.set_status(Status(StatusCode.ERROR, "e1"))
        span.set_status(StatusCode.UNSET)  # never overrides
        span.add_event("ev", {"k": "v"}, timestamp=5)
        span.record_exception(ValueError("boom"), attributes={"x": 1})
        span.update_name(span.name + "!")

    ours = fast.start_span("s", SpanKind.INTERNAL, {})
    ref = sdk_tracer.start_span("s", kind=SpanKind.INTERNAL)
    assert isinstance(ref, SdkSpan)
    for span in (ours, ref):
        exercise(span)
        span.end()
    with caplog.at_level(logging.WARNING, logger="loom.telemetry"):
        ours.set_attribute("late", 1)
        ours.end()
    assert "ended span" in caplog.text
    done_ours, done_ref = exporter.get_finished_spans()
    assert done_ours is ours
    assert dict(done_ours.attributes or {}).keys() == dict(done_ref.attributes or {}).keys()
    assert list(done_ours.attributes or {}) == ["list", "obj", "b", "a"]
    assert (done_ours.attributes or {})["list"] == (1, 2)
    assert done_ours.name == done_ref.name == "s!"
    assert done_ours.status.status_code is StatusCode.ERROR
    assert done_ours.status.description == done_ref.status.description == "e1"
    assert [e.name for e in done_ours.events] == [e.name for e in done_ref.events]
    exc_ours, exc_ref = done_ours.events[1], done_ref.events[1]
    assert dict(exc_ours.attributes or {}).keys() == dict(exc_ref.attributes or {}).keys()
    assert (exc_ours.attributes or {})["exception.type"] == "ValueError"
    assert "late" not in (done_ours.attributes or {})
    assert '"name": "s!"' in done_ours.to_json()


def test_an_exception_in_the_block_is_recorded_like_use_span() -> None:
    provider, exporter = _provider()
    tel = Telemetry(tracer_provider=provider)
    with pytest.raises(RuntimeError):
        cm = publish_span(tel, "jobs", "t", None, "reply.to")
        assert cm is None  # no current span: nothing to link to
        raise RuntimeError("x")
    fast = tel.fast_tracer()
    assert fast is not None
    with pytest.raises(RuntimeError), fast.start_as_current_span("outer", SpanKind.INTERNAL, {}):
        with fast.start_as_current_span("inner", SpanKind.INTERNAL, {}):
            raise RuntimeError("bad")
    inner, outer = exporter.get_finished_spans()
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    for span in (inner, outer):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "RuntimeError: bad"
        assert [e.name for e in span.events] == ["exception"]
    assert trace.get_current_span() is trace.INVALID_SPAN  # the context was restored


# -- traceparent -----------------------------------------------------------------------


def _sdk_span_context(flags: int, state: str | None = None) -> otel_context.Context:
    headers = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-{flags:02x}"}
    if state:
        headers["tracestate"] = state
    return propagate.extract(headers)


@pytest.mark.parametrize("flags", [0, 1])
@pytest.mark.parametrize("state", [None, "a=1,b=2"])
def test_inject_matches_the_propagator(flags: int, state: str | None) -> None:
    token = otel_context.attach(_sdk_span_context(flags, state))
    try:
        ours: dict[str, str] = {}
        theirs: dict[str, str] = {}
        inject_context(ours)
        propagate.inject(theirs)
    finally:
        otel_context.detach(token)
    assert ours == theirs and "traceparent" in ours


def test_inject_with_baggage_and_without_a_span() -> None:
    empty: dict[str, str] = {}
    inject_context(empty)
    assert empty == {}
    token = otel_context.attach(baggage.set_baggage("user", "u1", _sdk_span_context(1)))
    try:
        ours: dict[str, str] = {}
        inject_context(ours)
    finally:
        otel_context.detach(token)
    assert ours["baggage"] == "user=u1" and ours["traceparent"].endswith("-01")


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"},
        {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-00", "tracestate": "k=v"},
        {"traceparent": f"  01-{'ab' * 16}-{'cd' * 8}-01-extra"},
        {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01-extra"},
        {"traceparent": f"ff-{'ab' * 16}-{'cd' * 8}-01"},
        {"traceparent": f"00-{'0' * 32}-{'cd' * 8}-01"},
        {"traceparent": f"00-{'ab' * 16}-{'0' * 16}-01"},
        {"traceparent": f"00-{'AB' * 16}-{'cd' * 8}-01"},
        {"traceparent": "garbage"},
        {"traceparent": "0" * 600},
        {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "baggage": "a=b"},
        {"other": "x"},
    ],
)
def test_extract_matches_the_propagator(headers: dict[str, str]) -> None:
    ours, theirs = extract_context(headers), propagate.extract(headers)
    assert dict(ours).keys() == dict(theirs).keys()
    a, b = trace.get_current_span(ours), trace.get_current_span(theirs)
    assert a.get_span_context() == b.get_span_context()
    assert a.get_span_context().trace_state == b.get_span_context().trace_state
    assert baggage.get_all(ours) == baggage.get_all(theirs)


_GETTER = DefaultGetter()
_SETTER = DefaultSetter()


def test_another_propagator_is_used_as_it_is() -> None:
    from opentelemetry.propagators.textmap import TextMapPropagator

    class Custom(TextMapPropagator):
        def extract(self, carrier, context=None, getter=_GETTER):  # type: ignore[no-untyped-def]
            return baggage.set_baggage("custom", "yes", context)

        def inject(self, carrier, context=None, setter=_SETTER):  # type: ignore[no-untyped-def]
            setter.set(carrier, "x-custom", "1")

        @property
        def fields(self) -> set[str]:
            return {"x-custom"}

    saved = propagate.get_global_textmap()
    propagate.set_global_textmap(Custom())
    try:
        out: dict[str, str] = {}
        inject_context(out)
        assert out == {"x-custom": "1"}
        assert baggage.get_baggage("custom", extract_context({"traceparent": "x"})) == "yes"
    finally:
        propagate.set_global_textmap(saved)


def test_always_on_parent_based_shortcut_keeps_the_trace_state() -> None:
    provider, exporter = _provider(sampler=ParentBased(ALWAYS_ON))
    tel = Telemetry(tracer_provider=provider)
    headers = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "tracestate": "k=v"}
    with invoke_agent_span(tel, "a", _Event(headers)):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_state.to_header() == "k=v"
    assert span.parent is not None and span.parent.is_remote
    assert encode_span(span)["traceState"] == "k=v"


def test_only_the_sdk_tracer_gets_the_fast_path() -> None:
    from opentelemetry.sdk.trace import Tracer as SdkTracer

    class MyTracer(SdkTracer):
        pass

    provider, _ = _provider()
    sdk = provider.get_tracer("x")
    assert fast_tracer(sdk) is not None
    assert fast_tracer(trace.NoOpTracer()) is None
    mine = MyTracer.__new__(MyTracer)
    mine.__dict__.update(sdk.__dict__)
    assert fast_tracer(mine) is None  # a subclass may start spans its own way

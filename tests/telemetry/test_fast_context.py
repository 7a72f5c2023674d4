"""The shortcuts under Loom's spans compared with the OpenTelemetry paths they replace:
the current context read and set through its ``ContextVar`` (``fast_context``), span
ids drawn and ``SpanContext`` built inline, the parent's fields read as a tuple, and
the trace file's push of a plain span."""

from __future__ import annotations

import logging
import random
from contextvars import ContextVar, copy_context
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from loom.telemetry import fast_context
from loom.telemetry.fast_spans import SPAN_CONTEXT_LAYOUT, fast_tracer
from loom.telemetry.native_export import NativeFileSpanProcessor
from loom.telemetry.otlp_json import request_json


class Keep(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def test_the_api_internals_read_are_there() -> None:
    # Fails if the API moves them: the shortcuts would silently be off.
    assert fast_context.context_var() is not None
    assert fast_context.BAGGAGE_KEY is not None
    assert SPAN_CONTEXT_LAYOUT
    tracer = fast_tracer(TracerProvider().get_tracer("t"))
    assert tracer is not None and tracer.plain_ids


def test_one_current_context_for_loom_and_the_api() -> None:
    def run() -> None:
        token = fast_context.attach_value("k", 1)
        assert otel_context.get_value("k") == 1
        assert otel_context.get_current() is fast_context.current()
        api = otel_context.attach(otel_context.set_value("j", 2))
        assert fast_context.get_value("j") == 2 and fast_context.get_value("k") == 1
        assert dict(fast_context.current()) == {"k": 1, "j": 2}
        otel_context.detach(api)
        fast_context.detach(token)
        assert dict(otel_context.get_current()) == {}
        ctx = Context({"x": 3})
        token = fast_context.attach(ctx)
        assert otel_context.get_current() is ctx
        assert fast_context.get_value("x", Context({"x": 4})) == 4
        fast_context.detach(token)

    copy_context().run(run)


def test_attach_value_builds_what_set_value_builds() -> None:
    def run() -> None:
        base = otel_context.attach(otel_context.set_value("a", 1))
        theirs = otel_context.set_value("b", 2)
        token = fast_context.attach_value("b", 2)
        ours = fast_context.current()
        assert type(ours) is type(theirs) and dict(ours) == dict(theirs)
        fast_context.detach(token)
        otel_context.detach(base)

    copy_context().run(run)


def test_a_bad_token_is_logged_by_the_api(caplog: pytest.LogCaptureFixture) -> None:
    token = copy_context().run(fast_context.attach_value, "k", 1)
    with caplog.at_level(logging.ERROR, "opentelemetry.context"):
        fast_context.detach(token)  # made in another context
    assert "Failed to detach context" in caplog.text


def test_current_span_and_baggage_as_the_api_reads_them() -> None:
    span = NonRecordingSpan(SpanContext(1, 2, False))
    cases: list[Context] = [
        Context(),
        trace.set_span_in_context(span),
        otel_context.set_value(fast_context.SPAN_KEY, "not a span"),
        baggage.set_baggage("a", "b"),
        otel_context.set_value(fast_context.BAGGAGE_KEY or "", {}),
    ]
    for ctx in cases:

        def run(ctx: Context = ctx) -> None:
            token = otel_context.attach(ctx)
            assert fast_context.current_span() is trace.get_current_span()
            assert fast_context.has_baggage() is bool(baggage.get_all())
            otel_context.detach(token)

        copy_context().run(run)


def test_another_runtime_context_keeps_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    class Other(ContextVarsRuntimeContext):
        pass

    other = Other()
    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", other)
    assert fast_context.context_var() is None

    def run() -> None:
        token = fast_context.attach_value("k", 1)
        assert other.get_current().get("k") == 1 and fast_context.get_value("k") == 1
        fast_context.detach(token)
        assert "k" not in other.get_current()

    copy_context().run(run)


def test_a_runtime_context_without_its_context_var_keeps_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default runtime context class whose ``_current_context`` is not a
    ``ContextVar`` (here a wrapper of one): every shortcut goes through the API."""

    class Wrapped:
        def __init__(self) -> None:
            self.var: ContextVar[Context] = ContextVar("wrapped")

        def get(self) -> Context:
            return self.var.get(Context())

        def set(self, value: Context) -> Any:
            return self.var.set(value)

        def reset(self, token: Any) -> None:
            self.var.reset(token)

    runtime = ContextVarsRuntimeContext()
    runtime._current_context = Wrapped()  # type: ignore[assignment]
    calls: list[str] = []
    for name in ("get_current", "attach", "detach"):
        real = getattr(otel_context, name)

        def spy(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(otel_context, name, spy)
    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", runtime)

    def run() -> None:
        assert fast_context.context_var() is None
        token = fast_context.attach_value("k", 1)
        assert fast_context.get_value("k") == 1 and fast_context.current().get("k") == 1
        span = NonRecordingSpan(SpanContext(1, 2, False))
        inner = fast_context.attach_value(fast_context.SPAN_KEY, span)
        assert fast_context.current_span() is span and not fast_context.has_baggage()
        fast_context.detach(inner)
        fast_context.detach(token)
        assert fast_context.get_value("k") is None
        assert sorted(set(calls)) == ["attach", "detach", "get_current"]

    copy_context().run(run)


def _ids(provider: TracerProvider, fast: bool, parent: Context | None) -> list[SpanContext]:
    tracer = provider.get_tracer("t")
    out = []
    for _ in range(20):
        if fast:
            ft = fast_tracer(tracer)
            assert ft is not None
            span: Any = ft.start_span("s", SpanKind.INTERNAL, {}, parent)
        else:
            span = tracer.start_span("s", parent)
        out.append(span.get_span_context())
        span.end()
    return out


@pytest.mark.parametrize("state", [None, TraceState([("k", "v")])])
@pytest.mark.parametrize("remote", [False, True])
@pytest.mark.parametrize("root", [True, False])
def test_ids_and_span_contexts_are_the_sdks(
    root: bool, remote: bool, state: TraceState | None
) -> None:
    # The same random stream gives the same ids; the contexts are equal field by field.
    provider = TracerProvider()
    parent = (
        None
        if root
        else trace.set_span_in_context(
            NonRecordingSpan(SpanContext(5, 6, remote, TraceFlags(0x03), state))
        )
    )
    random.seed(14)
    ours = _ids(provider, True, parent)
    random.seed(14)
    theirs = _ids(provider, False, parent)
    assert ours == theirs
    for a, b in zip(ours, theirs, strict=True):
        assert type(a) is SpanContext and tuple(a) == tuple(b)
        assert a.is_valid and a.trace_state == b.trace_state and a.trace_flags == b.trace_flags
        assert type(a.trace_flags) is type(b.trace_flags)


def test_a_parent_context_subclass_is_read_through_its_properties() -> None:
    class Ctx(SpanContext):
        pass

    provider = TracerProvider()
    tracer = fast_tracer(provider.get_tracer("t"))
    assert tracer is not None
    parent = Ctx(7, 8, True, TraceFlags(0x01), TraceState([("a", "b")]))
    span: Any = tracer.start_span(
        "s", SpanKind.INTERNAL, {}, trace.set_span_in_context(NonRecordingSpan(parent))
    )
    ctx = span.get_span_context()
    assert ctx.trace_id == 7 and span.parent is parent and ctx.trace_state == parent.trace_state
    assert ctx.trace_flags == TraceFlags(0x01)  # the parent's random bit is not set
    invalid = Ctx(0, 8, True, TraceFlags(0x01))
    span = tracer.start_span(
        "s", SpanKind.INTERNAL, {}, trace.set_span_in_context(NonRecordingSpan(invalid))
    )
    assert span.parent is None and span.get_span_context().trace_id != 0


def test_another_id_generator_is_called() -> None:
    class Counting(IdGenerator):
        def __init__(self) -> None:
            self.n = 0

        def generate_span_id(self) -> int:
            self.n += 1
            return self.n

        def generate_trace_id(self) -> int:
            return 99

    gen = Counting()
    tracer = fast_tracer(TracerProvider(id_generator=gen).get_tracer("t"))
    assert tracer is not None and not tracer.plain_ids
    span = tracer.start_span("s", SpanKind.INTERNAL, {})
    assert span.get_span_context().trace_id == 99 and span.get_span_context().span_id == 1

    class Sub(RandomIdGenerator):
        pass

    tracer = fast_tracer(TracerProvider(id_generator=Sub()).get_tracer("t"))
    assert tracer is not None and not tracer.plain_ids


def test_the_plain_push_writes_what_the_general_one_writes(tmp_path: Path) -> None:
    # Plain spans (no events, links, status) and spans that look plain but are not
    # (an event dropped by a limit of 0, a trace state) against the Python encoder.
    keep = Keep()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "t"}), span_limits=SpanLimits(max_events=0)
    )
    provider.add_span_processor(keep)
    tracer = fast_tracer(provider.get_tracer("loom", "0.1"))
    assert tracer is not None
    remote = trace.set_span_in_context(
        NonRecordingSpan(SpanContext(5, 6, True, TraceFlags(0x01), TraceState([("k", "v")])))
    )
    for i in range(6):
        span = tracer.start_span(
            f"s{i}", SpanKind(i % 5), {"n": i}, remote if i % 2 else None, start_time=10 + i
        )
        if i == 4:
            span.add_event("dropped")
        span.end(end_time=100 + i)
    spans = keep.spans
    assert spans[4].dropped_events == 1
    path = tmp_path / "native.jsonl"
    proc = NativeFileSpanProcessor(path, max_export_batch_size=100, schedule_delay_millis=10**7)
    for s in spans:
        proc.on_end(s)
    proc.shutdown()
    assert path.read_bytes() == (request_json(spans) + "\n").encode()


@pytest.mark.parametrize("subclass", [False, True])
@pytest.mark.parametrize("state", [None, TraceState([("k", "v")])])
def test_inject_reads_the_context_as_the_propagator(subclass: bool, state: Any) -> None:
    from opentelemetry import propagate

    from loom.telemetry.propagation import inject_context

    class Ctx(SpanContext):
        pass

    cls = Ctx if subclass else SpanContext
    for ctx in (cls(7, 8, False, TraceFlags(0x03), state), cls(0, 8, False)):

        def run(ctx: SpanContext = ctx) -> None:
            token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(ctx)))
            ours: dict[str, str] = {}
            theirs: dict[str, str] = {}
            inject_context(ours)
            propagate.inject(theirs)
            assert ours == theirs
            otel_context.detach(token)

        copy_context().run(run)


def test_a_bound_record_builds_the_sdks_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics._internal.exemplar import TraceBasedExemplarFilter
    from opentelemetry.sdk.metrics._internal.measurement import Measurement
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from loom.telemetry import bound_metrics

    mp = MeterProvider(
        metric_readers=[InMemoryMetricReader()], exemplar_filter=TraceBasedExemplarFilter()
    )
    hist = mp.get_meter("m").create_histogram("h")
    bound = bound_metrics.BoundHistogram(hist, {"a": "b"})
    bound.record(1)
    assert bound.bound and bound._trace_based
    seen: list[tuple[Any, bool]] = []
    (aggregation,) = bound._aggregations or ()
    # The Measurement path (aggregations other than the explicit-bucket histogram's).
    assert bound._plain == (True,)
    bound._plain = (False,)
    monkeypatch.setattr(aggregation, "aggregate", lambda m, s: seen.append((m, s)))
    span = NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(1)))
    for ctx in (
        Context(),
        trace.set_span_in_context(span),
        trace.set_span_in_context(trace.INVALID_SPAN),
    ):

        def run(ctx: Context = ctx) -> None:
            token = otel_context.attach(ctx)
            bound.record(2.5)
            otel_context.detach(token)

        copy_context().run(run)
    for m, sample in seen:
        made = Measurement(2.5, m.time_unix_nano, hist, m.context, {"a": "b"})
        assert type(m) is not Measurement and isinstance(m, Measurement)
        assert vars(m) == vars(made) and m.attributes is bound.attributes
        assert sample == TraceBasedExemplarFilter().should_sample(2.5, 0, {}, m.context)
    assert [s for _, s in seen] == [False, True, False]
    mp.shutdown()

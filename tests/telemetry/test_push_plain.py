"""``SpanExporter.push_plain``, the trace file's path for a span with no events, links
or status: the same records (file bytes) and errors as ``push``, whatever the ids and
times (the fast int conversion, the trace-id cache), and the processor taking it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState

from loom._core import SpanExporter
from loom.telemetry.fast_spans import fast_tracer
from loom.telemetry.native_export import NativeFileSpanProcessor

ONE_BATCH = {"max_queue_size": 10_000, "max_export_batch_size": 10_000}

U64_MAX = 2**64 - 1


class Int(int):
    """An int subclass: the conversions' slow path."""


def ctx(trace_id: int, span_id: int, remote: bool = False) -> SpanContext:
    return SpanContext(trace_id, span_id, remote, TraceFlags(1))


SHARED_TRACE = 0x0AF7651916CD43DD8448EB211C80319C

#: (context, trace state header, parent, start, end, attributes) per span.
CASES: list[tuple[SpanContext, str | None, SpanContext | None, Any, Any, dict[str, Any]]] = [
    (ctx(1, 1), None, None, 10, 20, {}),
    (ctx(SHARED_TRACE, 2**63), None, ctx(SHARED_TRACE, 7), 1_700_000_000_000_000_000, 2**63, {}),
    # The same trace id object again, then an equal one that is another object.
    (ctx(SHARED_TRACE, U64_MAX), "k=v,a=b", ctx(SHARED_TRACE, U64_MAX, True), 0, U64_MAX, {}),
    (ctx(int(str(SHARED_TRACE)), 2**30), None, ctx(5, 2**30 - 1), None, None, {"n": 1}),
    (ctx(2**128 - 1, 2**32), None, None, 2**31, 2**62, {"s": "text ✓", "i": 2**40}),
    (ctx(Int(9), Int(2**40)), None, ctx(Int(9), Int(3), True), Int(5), Int(2**50), {"t": True}),
    (ctx(SHARED_TRACE, 12345), None, None, 1, 2, {"f": 0.5, "l": ("a", "b"), "no": None}),
]


def exporter(path: Path) -> tuple[SpanExporter, int, int]:
    ex = SpanExporter(path, **ONE_BATCH)
    res = ex.add_resource({"service.name": "t"}, None)
    scope = ex.add_scope("loom", "0.1", None, None)
    return ex, res, scope


def general(ex: SpanExporter, res: int, scope: int, case: Any, name: str = "s") -> int:
    c, state, parent, start, end, attrs = case
    return ex.push(
        c.trace_id,
        c.span_id,
        state,
        parent.span_id if parent is not None else None,
        parent is not None and parent.is_remote,
        name,
        1,
        start,
        end,
        attrs,
        0,
        None,
        0,
        None,
        0,
        0,
        None,
        res,
        scope,
    )


def plain(ex: SpanExporter, res: int, scope: int, case: Any, name: str = "s") -> int:
    c, state, parent, start, end, attrs = case
    return ex.push_plain(c, state, parent, name, 1, start, end, attrs, 0, res, scope)


def test_push_plain_writes_what_push_writes(tmp_path: Path) -> None:
    a, ra, sa = exporter(tmp_path / "push.jsonl")
    b, rb, sb = exporter(tmp_path / "plain.jsonl")
    for i, case in enumerate(CASES * 3):
        assert general(a, ra, sa, case, f"s{i}") == plain(b, rb, sb, case, f"s{i}") == 0
    assert a.shutdown() and b.shutdown()
    written = (tmp_path / "plain.jsonl").read_bytes()
    assert written == (tmp_path / "push.jsonl").read_bytes()
    assert str(U64_MAX) in written.decode() and "ffffffffffffffff" in written.decode()


@pytest.mark.parametrize(
    "case",
    [
        (ctx(1, 1), None, ctx(1, 2), -1, 2, {}),  # a negative time
        (ctx(1, 1), None, ctx(1, 2), 1, 2**64, {}),  # a time over 64 bits
        (ctx(1, 1), None, ctx(1, 2), 1.5, 2, {}),  # not an int
        (ctx(1, 1), None, (0, -3, False), 1, 2, {}),  # a negative parent id
        (ctx(1, 1), None, (0, 2**64, False), 1, 2, {}),  # a parent id over 64 bits
        ((2**128, 1), None, None, 1, 2, {}),  # a trace id over 128 bits
        ((-1, 1), None, None, 1, 2, {}),  # a negative trace id
        ((1, 2**64), None, None, 1, 2, {}),  # a span id over 64 bits
    ],
)
def test_push_plain_refuses_what_push_refuses(tmp_path: Path, case: Any) -> None:
    a, ra, sa = exporter(tmp_path / "push.jsonl")
    b, rb, sb = exporter(tmp_path / "plain.jsonl")
    c, state, parent, start, end, attrs = case
    with pytest.raises((OverflowError, TypeError)) as theirs:
        a.push(
            c[0], c[1], state, parent[1] if parent else None, False, "s", 1, start, end,
            attrs, 0, None, 0, None, 0, 0, None, ra, sa,
        )  # fmt: skip
    with pytest.raises(type(theirs.value)):
        plain(b, rb, sb, case)
    # Nothing queued, and the exporter still takes the next span.
    assert plain(b, rb, sb, CASES[0]) == 0
    assert b.stats()["accepted"] == 1
    a.shutdown()
    b.shutdown()


class Recorder:
    """Stands in for the processor's SpanExporter, recording which push it got."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name.startswith("push"):

            def call(*args: Any) -> Any:
                self.calls.append(name)
                return attr(*args)

            return call
        return attr


def test_loom_spans_take_push_plain_unless_their_parent_is_unusual(tmp_path: Path) -> None:
    class Sub(SpanContext):
        pass

    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    proc = NativeFileSpanProcessor(tmp_path / "run.jsonl", schedule_delay_millis=10**7)
    recorder = Recorder(proc._native)
    proc._native = recorder  # type: ignore[assignment]
    provider.add_span_processor(proc)
    tracer = fast_tracer(provider.get_tracer("loom", "0.1"))
    assert tracer is not None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan

    state = TraceState([("k", "v")])
    for parent in (
        None,
        SpanContext(5, 6, True, TraceFlags(1), state),
        Sub(5, 6, True, TraceFlags(1), state),
    ):
        context = None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
        tracer.start_span("s", SpanKind.INTERNAL, {"n": 1}, context).end()
    provider.shutdown()
    assert recorder.calls == ["push_plain", "push_plain", "push"]
    assert proc.stats()["exported"] == 3

"""Bound histogram records (``loom.telemetry.bound_metrics``) give the SDK's own data
points and exemplars: each case records the same measurements through the fast path on
one meter provider and through the public ``Histogram.record`` on another, and compares
what their readers collect."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Histogram,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY

from loom.telemetry import bound_metrics
from loom.telemetry.bound_metrics import BoundHistogram
from loom.telemetry.metrics import TOKEN_BUCKETS, _instruments, record_llm_call
from loom.telemetry.state import _process

ATTRS = [
    {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "p", "server.port": 443},
    {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "q", "gen_ai.token.type": "in"},
    {"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "p"},
]


@contextmanager
def in_span(sampled: bool | None, n: int = 1) -> Iterator[None]:
    if sampled is None:
        yield
        return
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    span = NonRecordingSpan(SpanContext(0xABC + n, 0x1234 + n, False, trace_flags=flags))
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def normalized(reader: InMemoryMetricReader) -> list[Any]:
    """The collected points without their timestamps (the two providers record at
    different instants)."""
    data = reader.get_metrics_data()
    out = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    point = {
                        f.name: getattr(p, f.name)
                        for f in dataclasses.fields(p)
                        if f.name not in ("start_time_unix_nano", "time_unix_nano", "exemplars")
                    }
                    point["attributes"] = dict(p.attributes or {})
                    point["exemplars"] = [
                        (e.value, dict(e.filtered_attributes or {}), e.span_id, e.trace_id)
                        for e in p.exemplars
                    ]
                    out.append((m.name, repr(sorted(point.items(), key=lambda kv: kv[0]))))
    return sorted(out)


def provider(
    exemplar_filter: Any, temporality: AggregationTemporality | None, views: list[View]
) -> tuple[MeterProvider, InMemoryMetricReader, Histogram]:
    preferred = {Histogram: temporality} if temporality is not None else None
    reader = InMemoryMetricReader(preferred_temporality=preferred)
    mp = MeterProvider(metric_readers=[reader], exemplar_filter=exemplar_filter, views=views)
    hist = mp.get_meter("loom").create_histogram(
        "h", explicit_bucket_boundaries_advisory=TOKEN_BUCKETS
    )
    return mp, reader, hist  # type: ignore[return-value]


FILTERS: list[Callable[[], Any]] = [
    TraceBasedExemplarFilter,
    AlwaysOnExemplarFilter,
    AlwaysOffExemplarFilter,
]
CONFIGS: dict[str, tuple[AggregationTemporality | None, list[View]]] = {
    "cumulative": (None, []),
    "delta": (AggregationTemporality.DELTA, []),
    "attribute_keys": (None, [View(instrument_name="h", attribute_keys={"gen_ai.provider.name"})]),
    "two_views": (None, [View(instrument_name="h"), View(instrument_name="h", name="h2")]),
    "cardinality_2": (None, [View(instrument_name="h", aggregation_cardinality_limit=2)]),
    "exponential": (
        None,
        [View(instrument_name="h", aggregation=ExponentialBucketHistogramAggregation())],
    ),
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("make_filter", FILTERS, ids=lambda f: f.__name__)
def test_same_points_and_exemplars_as_the_public_record(
    config: str, make_filter: Callable[[], Any]
) -> None:
    temporality, views = CONFIGS[config]
    fast_mp, fast_reader, fast_hist = provider(make_filter(), temporality, views)
    slow_mp, slow_reader, slow_hist = provider(make_filter(), temporality, views)
    bound = [BoundHistogram(fast_hist, a) for a in ATTRS]
    values = [3, 0.5, 70000, 1, 2.5, 0, -1, math.nan, 12, 5000, 8]
    try:
        for rnd in range(3):
            for i, v in enumerate(values):
                for j, b in enumerate(bound):
                    with in_span((None, True, False)[(i + j) % 3], i * 10 + j):
                        b.record(v)
                        slow_hist.record(v, ATTRS[j])
            assert normalized(fast_reader) == normalized(slow_reader), (config, rnd)
        expect_bound = config in ("cumulative", "attribute_keys", "two_views", "exponential")
        assert all(b.bound for b in bound) is expect_bound
        if config == "cardinality_2":  # two sets fit, the third overflows
            assert [b.bound for b in bound] == [True, True, False]
    finally:
        fast_mp.shutdown()
        slow_mp.shutdown()


def test_fast_path_is_taken_on_this_sdk() -> None:
    """Fails if the SDK internals the fast path reads vanish (it would silently fall
    back to the public record, correct but slow)."""
    assert bound_metrics.SUPPORTED
    mp, _reader, hist = provider(TraceBasedExemplarFilter(), None, [])
    try:
        b = BoundHistogram(hist, ATTRS[0])
        b.record(1)
        assert b.bound
        assert b._aggregations is not None and len(b._aggregations) == 1
        assert bound_metrics.INLINE and b._plain == (True,)  # the inline aggregation
    finally:
        mp.shutdown()


def _state(agg: Any) -> Any:
    """An explicit-bucket aggregation's state and its exemplar buckets' fields."""
    buckets = {i: dict(vars(b)) for i, b in agg._reservoir._reservoir_storage.items()}
    return (agg._value, agg._sum, agg._min, agg._max, buckets)


@pytest.mark.parametrize("record_min_max", [True, False])
def test_inline_aggregation_equals_the_sdks_aggregate(record_min_max: bool) -> None:
    """_aggregate_plain leaves the aggregation and its exemplar reservoir as the SDK's
    aggregate() with the same Measurement does: counts, sum, min, max, each bucket's
    value, time, attributes and span/trace ids (kept when there is no valid span), and
    the same collected points."""
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _ExplicitBucketHistogramAggregation,
    )
    from opentelemetry.sdk.metrics._internal.exemplar.exemplar_reservoir import (
        AlignedHistogramBucketExemplarReservoir,
    )
    from opentelemetry.sdk.metrics._internal.measurement import Measurement

    def make() -> Any:
        return _ExplicitBucketHistogramAggregation(
            ATTRS[0],
            AggregationTemporality.CUMULATIVE,
            0,
            AlignedHistogramBucketExemplarReservoir,
            boundaries=TOKEN_BUCKETS,
            record_min_max=record_min_max,
        )

    fast, slow = make(), make()
    assert bound_metrics._is_plain(fast)
    spans: list[Any] = [
        None,
        NonRecordingSpan(SpanContext(7, 8, False, trace_flags=TraceFlags(1))),
        NonRecordingSpan(SpanContext(9, 10, False, trace_flags=TraceFlags(0))),
        trace.INVALID_SPAN,
        "not a span",
    ]
    values = [3, 0.5, 70000, 1, 2.5, 0, 12, 5000, 8, 4, 10**9]
    seen_ids: set[Any] = set()
    for n, v in enumerate(values * 3):
        span = spans[n % len(spans)]
        ctx = otel_context.Context()
        if span is not None:
            ctx = otel_context.set_value(_SPAN_KEY, span, ctx)
        current = trace.get_current_span(ctx)
        sc = current.get_span_context() if current != trace.INVALID_SPAN else None
        sample = n % 4 != 3
        attrs = ATTRS[n % len(ATTRS)]
        t = 1_000 + n
        ids = (sc.span_id, sc.trace_id) if sc is not None else None
        bound_metrics._aggregate_plain(fast, v, t, attrs, ids, sample)
        slow.aggregate(Measurement(v, t, None, ctx, attrs), sample)  # type: ignore[arg-type]
        assert _state(fast) == _state(slow), n
        seen_ids |= {b.get("_ExemplarBucket__span_id") for b in _state(fast)[4].values()}
        if n % 7 == 6:
            assert fast.collect(AggregationTemporality.CUMULATIVE, 5_000 + n) == slow.collect(
                AggregationTemporality.CUMULATIVE, 5_000 + n
            )
    assert {8, 10} <= seen_ids  # the span cases were exercised


def test_other_aggregations_are_not_inlined() -> None:
    """Exponential histograms keep the SDK's aggregate()."""
    views = CONFIGS["exponential"][1]
    mp, _reader, hist = provider(TraceBasedExemplarFilter(), None, views)
    try:
        b = BoundHistogram(hist, ATTRS[0])
        b.record(1)
        assert b.bound and b._plain == (False,)
    finally:
        mp.shutdown()


def test_one_call_records_share_a_timestamp_and_the_span() -> None:
    """record_llm_call's three exemplars: one instant, the call's span."""
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], exemplar_filter=AlwaysOnExemplarFilter())
    saved = _process.meter_provider
    _process.meter_provider = mp
    try:
        for _ in range(2):  # the first call binds through the public record
            with in_span(True, 5):
                record_llm_call(
                    provider="p", request_model="m", duration_s=0.2, input_tokens=3,
                    output_tokens=4,
                )  # fmt: skip
        data = reader.get_metrics_data()
        exemplars = [
            e
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            for p in m.data.data_points
            for e in p.exemplars
        ]
        assert len(exemplars) == 3
        assert len({e.time_unix_nano for e in exemplars}) == 1
        assert {(e.trace_id, e.span_id) for e in exemplars} == {(0xABC + 5, 0x1234 + 5)}
    finally:
        _process.meter_provider = saved
        mp.shutdown()


def test_a_reader_added_later_gets_the_records() -> None:
    mp, reader, hist = provider(AlwaysOnExemplarFilter(), None, [])
    try:
        b = BoundHistogram(hist, ATTRS[0])
        b.record(1)
        later = InMemoryMetricReader()
        mp.add_metric_reader(later)
        b.record(2)
        b.record(3)
        (point,) = [p for _, p in normalized(later)]
        assert "('count', 2)" in point and "('sum', 5)" in point
        assert b.bound
        mp.remove_metric_reader(later)
        b.record(4)
        b.record(5)
        (point,) = [p for _, p in normalized(reader)]
        assert "('count', 5)" in point and "('sum', 15)" in point
    finally:
        mp.shutdown()


def test_disabled_meter_and_other_providers_use_the_public_record() -> None:
    calls: list[tuple[float, Any]] = []

    class Other:
        def record(self, value: float, attributes: Any = None, context: Any = None) -> None:
            calls.append((value, attributes))

    b = BoundHistogram(Other(), ATTRS[1])
    b.record(1)
    b.record(2)
    assert calls == [(1, ATTRS[1]), (2, ATTRS[1])]
    assert not b.bound


def test_record_llm_call_matches_the_public_path() -> None:
    """record_llm_call's points are those of the three public records it replaced."""
    fast_reader, slow_reader = InMemoryMetricReader(), InMemoryMetricReader()
    fast = MeterProvider(metric_readers=[fast_reader])
    slow = MeterProvider(metric_readers=[slow_reader])
    slow_genai = _instruments(slow)  # the same instruments, recorded publicly below
    saved = _process.meter_provider
    _process.meter_provider = fast
    calls: list[dict[str, Any]] = [
        {"provider": "openai", "request_model": "m", "duration_s": 0.3, "input_tokens": 10,
         "output_tokens": 5, "response_model": "m-1", "server_address": "h", "server_port": 443},
        {"provider": "openai", "request_model": "m", "duration_s": 1.3, "input_tokens": 7,
         "output_tokens": 0, "response_model": "m-1", "server_address": "h", "server_port": 443},
        {"provider": "openai", "request_model": "m", "duration_s": 0.1, "error_type": "429",
         "server_address": "h"},
        {"provider": "x", "request_model": "n", "duration_s": -1.0, "input_tokens": 3,
         "operation": "embeddings", "response_model": ""},
    ]  # fmt: skip
    try:
        for n, kw in enumerate(calls * 3):
            with in_span(n % 2 == 0, n):
                record_llm_call(**kw)
                attrs: dict[str, Any] = {
                    "gen_ai.operation.name": kw.get("operation", "chat"),
                    "gen_ai.provider.name": kw["provider"],
                    "gen_ai.request.model": kw["request_model"],
                }
                if kw.get("response_model"):
                    attrs["gen_ai.response.model"] = kw["response_model"]
                if kw.get("server_address"):
                    attrs["server.address"] = kw["server_address"]
                if kw.get("server_port") is not None:
                    attrs["server.port"] = kw["server_port"]
                if kw.get("error_type"):
                    attrs["error.type"] = kw["error_type"]
                slow_genai.duration.record(max(0.0, kw["duration_s"]), attrs)
                if not kw.get("error_type"):
                    if kw.get("input_tokens") is not None:
                        slow_genai.tokens.record(
                            kw["input_tokens"], {**attrs, "gen_ai.token.type": "input"}
                        )
                    if kw.get("output_tokens") is not None:
                        slow_genai.tokens.record(
                            kw["output_tokens"], {**attrs, "gen_ai.token.type": "output"}
                        )
        got = normalized(fast_reader)
        assert got == normalized(slow_reader)
        assert len(got) == 6  # 3 duration sets, 3 token sets
        assert all(r.bound for rs in _instruments(fast).bound.values() for r in (rs.duration,))
    finally:
        _process.meter_provider = saved
        fast.shutdown()
        slow.shutdown()


@pytest.mark.parametrize("env", [None, "always_off", "always_on"])
def test_the_exemplar_filter_setting_is_followed(
    env: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_METRICS_EXEMPLAR_FILTER decides, as for the SDK's own records (default
    trace_based: exemplars of calls inside a sampled span only)."""
    if env is None:
        monkeypatch.delenv("OTEL_METRICS_EXEMPLAR_FILTER", raising=False)
    else:
        monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", env)
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    saved = _process.meter_provider
    _process.meter_provider = mp
    try:
        for n, sampled in enumerate((True, True, False)):
            with in_span(sampled, n):
                record_llm_call(provider="p", request_model="m", duration_s=0.5)
        data = reader.get_metrics_data()
        (point,) = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
        assert point.count == 3
        ids = {(e.trace_id, e.span_id) for e in point.exemplars}
        expected = {
            None: {(0xABC + 1, 0x1234 + 1)},  # the last sampled call's
            "always_off": set(),
            "always_on": {(0xABC + 2, 0x1234 + 2)},  # the last call's
        }[env]
        assert ids == expected
        assert len(point.exemplars) == (0 if env == "always_off" else 1)
    finally:
        _process.meter_provider = saved
        mp.shutdown()


def test_a_refused_first_value_binds_on_the_next_record(caplog: pytest.LogCaptureFixture) -> None:
    mp, reader, hist = provider(AlwaysOnExemplarFilter(), None, [])
    try:
        b = BoundHistogram(hist, ATTRS[0])
        b.record(-1)  # the SDK refuses it (and logs), no aggregation made
        assert not b.bound
        b.record(2)
        b.record(3)
        assert b.bound
        (point,) = [p for _, p in normalized(reader)]
        assert "('count', 2)" in point and "('sum', 5)" in point
    finally:
        mp.shutdown()

"""Histogram records bound to one attribute set, without the SDK's per-record work.

Why: ``Histogram.record(value, attributes)`` of the OpenTelemetry SDK validates and
copies the attributes into a ``Measurement``, copies them again, hashes them
(a recursive, sorted walk) to find the attribute set's aggregation, for every reader
and view, on every record: ~9-12 µs on the benchmark machine, three records per LLM
call. Loom records the same few attribute sets (provider, model, server) over and over.

Mechanism: a :class:`BoundHistogram` holds one instrument and one attribute set. Its
first record goes through the public ``record()``, which makes the SDK create the
aggregation of that set in every reader's storage (applying views, attribute-key
filters, the cardinality limit). Then it looks those aggregation objects up, the way
the SDK does (same cleaned attributes, same view filter, same hash), and later records
hand each of them a ``Measurement`` directly, after the same value checks and the same
exemplar filter call as the SDK's consumer. So the data points and exemplars are the
SDK's own: only the per-record lookup is gone.

Where the public ``record()`` is kept, for every record of the instrument and set:
an SDK whose internals differ (the names ``_bind`` reads are checked), delta
temporality (the SDK swaps the aggregations at each collection and holds a lock while
aggregating), an attribute set over the cardinality limit (it goes to the overflow
point), an invalid value (the SDK logs it), a disabled meter. Binding is tried again
after a reader is added or removed, and while the SDK has not made the set's
aggregation yet (a first value it refused, a disabled meter).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Mapping, Sequence
from math import isfinite
from time import time_ns
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Span, SpanContext

from loom.telemetry.fast_context import SPAN_KEY
from loom.telemetry.fast_context import current as get_current
from loom.telemetry.fast_spans import SAMPLED_BIT, SPAN_CONTEXT_LAYOUT

_new = object.__new__
_EXEMPLAR_FIELDS = ("value", "time_unix_nano", "attributes", "span_id", "trace_id", "offered")

try:  # the SDK internals read here (opentelemetry-sdk 1.45 has them all)
    from opentelemetry.attributes import _clean_attribute_value
    from opentelemetry.sdk.metrics._internal._view_instrument_match import (
        _hash_attributes,
        _ViewInstrumentMatch,
    )
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _ExplicitBucketHistogramAggregation,
    )
    from opentelemetry.sdk.metrics._internal.exemplar import TraceBasedExemplarFilter
    from opentelemetry.sdk.metrics._internal.exemplar.exemplar_reservoir import (
        AlignedHistogramBucketExemplarReservoir,
        ExemplarBucket,
    )
    from opentelemetry.sdk.metrics._internal.measurement import Measurement
    from opentelemetry.sdk.metrics._internal.measurement_consumer import (
        SynchronousMeasurementConsumer,
    )
    from opentelemetry.sdk.metrics._internal.metric_reader_storage import MetricReaderStorage

    class _Cleaned(Measurement):
        """A ``Measurement`` whose attributes were cleaned once, when bound (the
        dataclass's ``__post_init__`` would clean them again on every record)."""

        def __post_init__(self) -> None:
            pass

    SUPPORTED = True
    #: The fields an ``ExemplarBucket.offer`` sets (name-mangled); the explicit-bucket
    #: aggregation is done here only while a fresh bucket has exactly these.
    _BUCKET_FIELDS = tuple(f"_ExemplarBucket__{n}" for n in _EXEMPLAR_FIELDS)
    INLINE = set(vars(ExemplarBucket())) == set(_BUCKET_FIELDS)
except ImportError:  # an SDK without them: the public record() always
    SUPPORTED = INLINE = False


class BoundHistogram:
    """``histogram.record(value, attributes)`` for one fixed attribute set.

    Args:
        histogram: An instrument of a meter provider (any; the fast path is taken for
            the SDK's own only).
        attributes: The attribute set; not copied, and must not change afterwards.
    """

    __slots__ = (
        "_aggregations",
        "_consumer",
        "_filter",
        "_given_up",
        "_plain",
        "_storages",
        "_trace_based",
        "attributes",
        "histogram",
    )

    def __init__(self, histogram: Any, attributes: Mapping[str, Any]) -> None:
        self.histogram = histogram
        self.attributes = attributes
        #: The aggregations records go to (None: the public record()).
        self._aggregations: tuple[Any, ...] | None = None
        #: The SDK consumer and its reader storages as of the last binding.
        self._consumer: Any = None
        self._storages: Any = None
        self._filter: Any = None
        self._trace_based = False
        #: Per aggregation: whether :func:`_aggregate_plain` may stand in for its
        #: ``aggregate`` (the SDK's explicit-bucket histogram and exemplar reservoir).
        self._plain: tuple[bool, ...] = ()
        #: The SDK is not the one this module knows: the public record() for good.
        self._given_up = not SUPPORTED

    @property
    def bound(self) -> bool:
        """Whether records skip the SDK's per-record lookup (see the module docstring)."""
        return self._aggregations is not None

    def record(self, value: float) -> None:
        """Records ``value`` (as ``histogram.record(value, attributes)`` does)."""
        record_each(((self, value),))

    def _public(self, value: float) -> None:
        """The SDK's public record, then a (re)binding if the readers changed."""
        self.histogram.record(value, self.attributes)
        if not self._given_up and (
            self._consumer is None or self._consumer._reader_storages is not self._storages
        ):
            self._bind()

    def _bind(self) -> None:
        """Finds the aggregations the SDK made for the attribute set (after a public
        record), or leaves the instrument on the public path."""
        self._aggregations = None
        try:
            consumer = self.histogram._measurement_consumer
            if type(consumer) is not SynchronousMeasurementConsumer:
                self._given_up = True
                return
            storages = consumer._reader_storages
            self._consumer, self._storages = consumer, storages
            exemplar_filter = consumer._sdk_config.exemplar_filter
            cleaned = _clean_attribute_value(self.attributes, None)
            if not isinstance(cleaned, Mapping) or dict(cleaned) != dict(self.attributes):
                self._given_up = True  # attributes the SDK would change: its cleaning
                return
            found: list[Any] = []
            for storage in storages.values():
                if type(storage) is not MetricReaderStorage:
                    self._given_up = True
                    return
                for match in storage._get_or_init_view_instrument_match(self.histogram):
                    if type(match) is not _ViewInstrumentMatch:
                        self._given_up = True
                        return
                    if match._reset_on_collect:
                        return  # delta: until the readers change
                    attrs = dict(cleaned)
                    keys = match._view._attribute_keys
                    if keys is not None:
                        attrs = {k: v for k, v in attrs.items() if k in keys}
                    made = match._attributes_aggregation
                    aggregation = made.get(_hash_attributes(attrs))
                    if aggregation is None:
                        if len(made) < match._cardinality_limit:
                            # Not made yet (the value was refused, the meter is
                            # disabled): bind on a later record.
                            self._consumer = None
                        return  # else over the limit: the SDK's overflow point
                    found.append(aggregation)
        except AttributeError:
            self._given_up = True  # SDK internals changed: the public path
            return
        self._filter = exemplar_filter
        self._trace_based = type(exemplar_filter) is TraceBasedExemplarFilter
        self._plain = tuple(_is_plain(a) for a in found)
        self._aggregations = tuple(found)


def _is_plain(aggregation: Any) -> bool:
    """Whether ``aggregation`` is the SDK's explicit-bucket histogram with its aligned
    exemplar reservoir, whose ``aggregate`` :func:`_aggregate_plain` repeats."""
    if not INLINE or type(aggregation) is not _ExplicitBucketHistogramAggregation:
        return False
    reservoir = getattr(aggregation, "_reservoir", None)
    storage = getattr(reservoir, "_reservoir_storage", None)
    names = ("_lock", "_value", "_sum", "_min", "_max", "_record_min_max", "_boundaries")
    return (
        type(reservoir) is AlignedHistogramBucketExemplarReservoir
        and type(storage) is defaultdict
        and storage.default_factory is ExemplarBucket
        and hasattr(reservoir, "_lock")
        and hasattr(reservoir, "_boundaries")
        and all(hasattr(aggregation, n) for n in names)
    )


def _aggregate_plain(
    agg: Any, value: float, t: int, attributes: Any, ids: tuple[int, int] | None, sample: bool
) -> None:
    """``_ExplicitBucketHistogramAggregation.aggregate`` and, when ``sample``, its
    ``AlignedHistogramBucketExemplarReservoir.offer`` and ``ExemplarBucket.offer``, with
    the same locks and state changes, for the current span's ``(span_id, trace_id)``
    (None: no valid current span, whose ids the bucket then keeps, as the SDK's does)."""
    with agg._lock:
        counts = agg._value
        if counts is None:
            counts = agg._value = [0] * (len(agg._boundaries) + 1)
        agg._sum += value
        if agg._record_min_max:
            agg._min = min(agg._min, value)
            agg._max = max(agg._max, value)
        counts[bisect_left(agg._boundaries, value)] += 1
    if not sample:
        return
    reservoir = agg._reservoir
    with reservoir._lock:
        # The aligned reservoir's bucket: the first boundary >= value (its linear scan).
        bucket = reservoir._reservoir_storage[bisect_left(reservoir._boundaries, value)]
        bucket._ExemplarBucket__value = value
        bucket._ExemplarBucket__time_unix_nano = t
        bucket._ExemplarBucket__attributes = attributes
        if ids is not None:
            bucket._ExemplarBucket__span_id, bucket._ExemplarBucket__trace_id = ids
        bucket._ExemplarBucket__offered = True


def record_each(records: Sequence[tuple[BoundHistogram, float]]) -> None:
    """Records each ``(bound, value)`` as ``bound.record(value)`` does, with one
    timestamp, one current context and one current-span lookup for all of them (the
    records of one LLM call; the SDK reads the clock and the context once per record)."""
    t = 0
    ctx: Any = None
    # The current span's (span_id, trace_id) and sampled flag, read once for the call.
    ids: tuple[int, int] | None = None
    sampled = False
    for bound, value in records:
        aggregations = bound._aggregations
        histogram = bound.histogram
        if not (
            aggregations is not None
            and bound._consumer._reader_storages is bound._storages
            and histogram._is_enabled()
            and isfinite(value)
            and value >= 0
        ):
            bound._public(value)
            continue
        if ctx is None:
            t = time_ns()
            ctx = get_current()
            span = ctx.get(SPAN_KEY)
            # trace.get_current_span(ctx) != INVALID_SPAN, as the exemplar filter and
            # bucket test it.
            if span is not None and isinstance(span, Span) and span != INVALID_SPAN:
                span_context: Any = span.get_span_context()
                if SPAN_CONTEXT_LAYOUT and type(span_context) is SpanContext:
                    # The tuple's fields (the properties' values, without their frames).
                    ids = (span_context[1], span_context[0])
                    sampled = bool(span_context[3] & SAMPLED_BIT)
                else:
                    ids = (span_context.span_id, span_context.trace_id)
                    sampled = span_context.trace_flags.sampled
        attributes = bound.attributes
        if bound._trace_based:  # TraceBasedExemplarFilter.should_sample, inlined
            sample = sampled
        else:
            sample = bound._filter.should_sample(value, t, attributes, ctx)
        measurement = None
        for aggregation, plain in zip(aggregations, bound._plain, strict=True):
            if plain:
                _aggregate_plain(aggregation, value, t, attributes, ids, sample)
                continue
            if measurement is None:
                # The frozen dataclass's fields, set as its __init__ sets them (without
                # one object.__setattr__ call per field).
                measurement = _new(_Cleaned)
                measurement.__dict__.update(
                    value=value,
                    time_unix_nano=t,
                    instrument=histogram,
                    context=ctx,
                    attributes=attributes,
                )
            aggregation.aggregate(measurement, sample)


class BoundCall:
    """The three records of one kind of LLM call (one attribute set)."""

    __slots__ = ("duration", "input", "output")

    def __init__(self, duration: BoundHistogram, input: BoundHistogram, output: BoundHistogram):
        self.duration = duration
        self.input = input
        self.output = output

    def record(self, duration: float, input: float | None, output: float | None) -> None:
        """Records a call's duration and its token counts (None: not recorded)."""
        if input is not None and output is not None:
            record_each(((self.duration, duration), (self.input, input), (self.output, output)))
            return
        records = [(self.duration, duration)]
        if input is not None:
            records.append((self.input, input))
        if output is not None:
            records.append((self.output, output))
        record_each(records)


__all__ = ["INLINE", "SUPPORTED", "BoundCall", "BoundHistogram", "record_each"]

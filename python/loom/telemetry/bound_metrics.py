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

from collections.abc import Mapping
from math import isfinite
from time import time_ns
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Span

from loom.telemetry.fast_context import SPAN_KEY
from loom.telemetry.fast_context import current as get_current

_new = object.__new__

try:  # the SDK internals read here (opentelemetry-sdk 1.45 has them all)
    from opentelemetry.attributes import _clean_attribute_value
    from opentelemetry.sdk.metrics._internal._view_instrument_match import (
        _hash_attributes,
        _ViewInstrumentMatch,
    )
    from opentelemetry.sdk.metrics._internal.exemplar import TraceBasedExemplarFilter
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
except ImportError:  # an SDK without them: the public record() always
    SUPPORTED = False


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
        #: The SDK is not the one this module knows: the public record() for good.
        self._given_up = not SUPPORTED

    @property
    def bound(self) -> bool:
        """Whether records skip the SDK's per-record lookup (see the module docstring)."""
        return self._aggregations is not None

    def record(self, value: float) -> None:
        """Records ``value`` (as ``histogram.record(value, attributes)`` does)."""
        aggregations = self._aggregations
        histogram = self.histogram
        if (
            aggregations is not None
            and self._consumer._reader_storages is self._storages
            and histogram._is_enabled()
            and isfinite(value)
            and value >= 0
        ):
            t = time_ns()
            ctx = get_current()
            attributes = self.attributes
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
            if self._trace_based:
                # TraceBasedExemplarFilter.should_sample, its calls inlined.
                span = ctx.get(SPAN_KEY)
                if span is None or not isinstance(span, Span) or span == INVALID_SPAN:
                    sample = False
                else:
                    sample = span.get_span_context().trace_flags.sampled
            else:
                sample = self._filter.should_sample(value, t, attributes, ctx)
            for aggregation in aggregations:
                aggregation.aggregate(measurement, sample)
            return
        histogram.record(value, self.attributes)
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
        self._aggregations = tuple(found)


__all__ = ["SUPPORTED", "BoundHistogram"]

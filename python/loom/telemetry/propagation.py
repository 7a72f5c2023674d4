"""W3C trace context in event headers: ``traceparent``/``tracestate`` written and read
directly when OpenTelemetry's global propagator is the default one.

Why: through the propagator API (a composite of the trace-context and baggage
propagators, each with its getter/setter indirection) injecting costs ~4 µs and
extracting ~6-8 µs on the benchmark machine, for every event on the bus. The default
propagator's result is reproduced exactly here: the same header text, the same
validation (the trace-context propagator's own regular expression, length limits,
all-zero ids, version ``ff``, version ``00`` with extra fields), the same extracted
context (a non-recording remote span in a fresh context). Baggage, another
propagator (``OTEL_PROPAGATORS``, ``set_global_textmap``) or anything unusual goes
through the API as before.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from loom.telemetry import fast_context
from loom.telemetry.fast_spans import SPAN_CONTEXT_LAYOUT
from loom.telemetry.state import _process

_TC = TraceContextTextMapPropagator
# The propagator's own pattern and limit (an API without them: always the propagator).
_PATTERN = getattr(_TC, "_TRACEPARENT_HEADER_FORMAT_RE", None)
_MATCH = _PATTERN.match if _PATTERN is not None else None
_MAX_TRACEPARENT: int = getattr(_TC, "_TRACEPARENT_MAXIMUM_LENGTH", 0)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _default() -> bool | None:
    """True: the global propagator is trace context + baggage (the default); False:
    trace context alone; None: anything else."""
    if _MATCH is None or not _MAX_TRACEPARENT:
        return None
    prop = propagate.get_global_textmap()
    cached = _process.propagator_mode
    if cached is not None and cached[0] is prop:
        return cached[1]
    mode = _mode(prop)
    _process.propagator_mode = (prop, mode)
    return mode


def _mode(prop: object) -> bool | None:
    if type(prop) is not CompositePropagator:
        return False if type(prop) is _TC else None
    kinds = [type(p) for p in prop._propagators]
    if kinds == [_TC, W3CBaggagePropagator]:
        return True
    if kinds == [_TC]:
        return False
    return None


def inject_context(headers: MutableMapping[str, str]) -> None:
    """Adds ``traceparent``/``tracestate`` of the current span (and ``baggage``, if
    any) to ``headers``, as ``opentelemetry.propagate.inject`` does."""
    mode = _default()
    if mode is None or (mode and fast_context.has_baggage()):
        propagate.inject(headers)
        return
    ctx = fast_context.current_span().get_span_context()
    if SPAN_CONTEXT_LAYOUT and type(ctx) is SpanContext:
        trace_id, span_id, _, flags, state, valid = ctx  # the properties' values
    else:
        trace_id, span_id, flags = ctx.trace_id, ctx.span_id, ctx.trace_flags
        state, valid = ctx.trace_state, ctx.is_valid
    if not valid and ctx == INVALID_SPAN_CONTEXT:
        return  # the propagator's test: another invalid context is still written
    headers["traceparent"] = "00-%032x-%016x-%02x" % (  # noqa: UP031 (the fastest)
        trace_id,
        span_id,
        flags,
    )
    if state is not DEFAULT_TRACE_STATE and state:
        headers["tracestate"] = state.to_header()


def extract_context(headers: dict[str, Any]) -> Context:
    """The context ``headers`` carry, as ``opentelemetry.propagate.extract(headers)``
    returns it."""
    mode = _default()
    if mode is None or (mode and "baggage" in headers):
        return propagate.extract(headers)
    header = headers.get("traceparent")
    if not isinstance(header, str):
        if header is None:
            return Context()
        return propagate.extract(headers)  # a list of values: the API's getter
    if len(header) > _MAX_TRACEPARENT:
        return propagate.extract(headers)  # logs the warning
    m = _MATCH(header) if _MATCH is not None else None
    if m is None:
        return Context()
    version, trace_id, span_id, flags, rest = m.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN or version == "ff":
        return Context()
    if version == "00" and rest:
        return Context()
    state = headers.get("tracestate")
    if state is not None:
        if not isinstance(state, str) or len(state) > 512:
            return propagate.extract(headers)
        trace_state: TraceState | None = TraceState.from_header([state])
    else:
        trace_state = None
    span_context = SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16)),
        trace_state=trace_state,
    )
    # trace.set_span_in_context(span, Context()), without copying the empty context.
    return Context({fast_context.SPAN_KEY: NonRecordingSpan(span_context)})


__all__ = ["extract_context", "inject_context"]

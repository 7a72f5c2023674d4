"""Loom's own spans, made without the SDK tracer's per-span machinery.

Why: on the 2-core benchmark machine an OpenTelemetry SDK span costs ~22 µs to start
and end before any processor runs (per-attribute validation into ``BoundedAttributes``,
a lock per span and per ``set_attribute``, a ``ReadableSpan`` copy at the end, the
generic ``use_span`` generator), ~40 µs behind a ``BatchSpanProcessor`` — several times
an untraced request of the bus. Loom makes 5 spans per request.

What stays the same: a :class:`LoomSpan` **is** an ``opentelemetry.sdk.trace.ReadableSpan``
and implements the ``opentelemetry.trace.Span`` API, so it is handed, unchanged, to the
provider's span processors (``on_start``, ``_on_ending``, ``on_end``): batch and simple
processors, every exporter, the dashboard's ``SpanBuffer``. It is made the current span
in OpenTelemetry's current context (its ``ContextVar``, :mod:`~.fast_context`), so
``trace.get_current_span()`` and spans of user code and instrumentations (SDK spans)
nest under it. Ids come from the tracer's id generator (the SDK's default
``RandomIdGenerator``: its ``random.getrandbits`` calls made here, same stream, and the
``SpanContext`` tuple built as its constructor builds it); the provider's sampler
decides (a ``ParentBased`` sampler whose delegate for the parent's case is
``ALWAYS_ON`` / ``ALWAYS_OFF`` is evaluated here directly, with the same result; any
other sampler is called). The tracer's enabled switch (tracer
configurator) is honoured.

Where the SDK path is kept (:func:`fast_tracer` returns None): a provider that is not
the SDK's ``TracerProvider``, span limits that could change Loom's attributes
(``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` and friends, fewer than
:data:`MIN_ATTRIBUTE_LIMIT` attributes), and the SDK's own tracer metrics switched on.

Attribute values: ``str``/``bool``/``int``/``float`` are stored as given (what the SDK
stores for them with no length limit); anything else goes through the SDK's own
cleaning (sequences become tuples, invalid values are dropped with a warning), so user
code calling ``set_attribute`` on a Loom span gets the SDK's behaviour. Changes after
``end()`` are ignored with a warning, as the SDK does.
"""

from __future__ import annotations

import dis
import logging
import random as _random
import traceback
from collections.abc import Mapping, Sequence
from time import time_ns
from types import TracebackType
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import DEFAULT_TRACE_STATE as _DEFAULT_TRACE_STATE
from opentelemetry.util import types

from loom.telemetry import fast_context
from loom.telemetry.fast_context import SPAN_KEY

log = logging.getLogger("loom.telemetry")

#: Below this many attributes per span the SDK's limit could drop some of Loom's own.
MIN_ATTRIBUTE_LIMIT = 32

_PLAIN = frozenset({str, bool, int, float})
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
#: The W3C sampled bit of ``trace_flags`` (what ``TraceFlags.sampled`` tests).
SAMPLED_BIT = int(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
# W3C trace context level 2's "random trace id" flag: newer APIs only (fast_tracer
# keeps the SDK path on SDKs without it, whose spans never carry the flag).
_RANDOM = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | _RANDOM)
_NOT_SAMPLED_RANDOM = TraceFlags(_RANDOM)
_new_tuple = tuple.__new__


def _span_context_layout() -> bool:
    """Whether ``SpanContext`` is the tuple ``(trace_id, span_id, is_remote,
    trace_flags, trace_state, is_valid)`` its ``__new__`` builds (then Loom builds it
    without the call; otherwise it calls the constructor)."""
    probe = SpanContext(1, 2, False, _SAMPLED, None)
    return (
        isinstance(probe, tuple)
        and tuple(probe) == (1, 2, False, _SAMPLED, probe.trace_state, True)
        and probe.trace_state is _DEFAULT_TRACE_STATE
        and _new_tuple(SpanContext, tuple(probe)) == probe
    )


#: Whether Loom reads and builds ``SpanContext`` as a tuple (see _span_context_layout).
SPAN_CONTEXT_LAYOUT = _span_context_layout()


def _clean(value: Any) -> Any:
    """The SDK's cleaning of a value that is not a plain scalar (no length limit: the
    only case :func:`fast_tracer` accepts). A non-empty tuple of strings is what the
    SDK returns for it, so it is kept as it is."""
    if type(value) is tuple and value:
        for v in value:
            if type(v) is not str:
                break
        else:
            return value
    return _clean_attribute_value(value, None)


class LoomSpan(trace_api.Span, ReadableSpan):
    """One of Loom's spans: a recording ``Span`` and the ``ReadableSpan`` processors get
    (see the module docstring). Made by :class:`FastTracer` only."""

    def __init__(
        self,
        tracer: FastTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        start_time: int,
    ) -> None:
        # ReadableSpan's fields, set directly (its __init__ would build a Resource).
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = tracer.sdk.instrumentation_info
        self._instrumentation_scope = tracer.scope
        self._parent = parent
        self._start_time = start_time
        self._end_time: int | None = None
        self._attributes = attributes
        #: The same dict, typed as what it is (ReadableSpan types the field loosely).
        self._attrs: dict[str, Any] = attributes
        self._events: Sequence[Event] = ()
        self._links: Sequence[trace_api.Link] = ()
        self._resource = tracer.sdk.resource
        self._status = _UNSET
        self._tracer = tracer
        self._dropped = 0

    # -- the Span API -------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # never None here

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end_time is not None:
            log.warning("Setting attribute on ended span.")
            return
        self._set(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is not None:
            log.warning("Setting attribute on ended span.")
            return
        mine = self._attrs
        limit = self._tracer.limits.max_span_attributes
        if limit is not None and len(mine) + len(attributes) > limit:
            for key, value in attributes.items():
                self._set(key, value)
            return
        # No limit can be reached: _set's rules without its per-call checks.
        for key, value in attributes.items():
            if type(key) is not str or not key:
                self._set(key, value)  # logs and counts it
                continue
            if type(value) not in _PLAIN:
                value = _clean(value)
            if key in mine:
                del mine[key]
            mine[key] = value

    def _set(self, key: Any, value: Any) -> None:
        # BoundedAttributes' rules: a valid key, a cleaned value, a replaced key moves
        # to the end, the oldest is dropped when the limit is reached.
        if type(key) is not str or not key:
            log.warning(
                "invalid key `%s`. must be non-empty string. Dropping key from attributes.", key
            )
            self._dropped += 1
            return
        if type(value) not in _PLAIN:
            value = _clean(value)
        mine = self._attrs
        if key in mine:
            del mine[key]
        limit = self._tracer.limits.max_span_attributes
        if limit is not None and len(mine) >= limit:
            log.warning(
                "Attributes dict is full. Dropping the oldest key-value pair from attributes "
                "to make space for the new key-value pair."
            )
            del mine[next(iter(mine))]
            self._dropped += 1
        mine[key] = value

    @property
    def dropped_attributes(self) -> int:
        return self._dropped

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        if self._end_time is not None:
            log.warning("Calling add_event() on an ended span.")
            return
        events = self._events
        if not isinstance(events, BoundedList):
            events = self._events = BoundedList(self._tracer.limits.max_events)
        events.append(
            Event(
                name=name,
                attributes=attributes,
                timestamp=timestamp,
                limit=self._tracer.limits.max_event_attributes,
            )
        )

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._end_time is not None:
            log.warning("Calling add_link() on an ended span.")
            return
        if not context.is_valid and not attributes:
            return
        links = self._links
        if not isinstance(links, BoundedList):
            links = self._links = BoundedList(self._tracer.limits.max_links)
        links.append(trace_api.Link(context=context, attributes=attributes))

    def update_name(self, name: str) -> None:
        if self._end_time is not None:
            log.warning("Calling update_name() on an ended span.")
            return
        self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None:
            log.warning("Calling set_status() on an ended span.")
            return
        # The SDK's rules: OK is final, UNSET never overrides.
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                log.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self._status = status
        elif isinstance(status, StatusCode):
            if status is StatusCode.UNSET:
                return
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # The SDK's event, attribute for attribute.
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        attrs: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}"
            if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            log.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        t, processor = self._tracer, self._tracer.processor
        # hooks(), inline while the processors are those it cached (one frame less).
        hooks = t._hooks if getattr(processor, "_span_processors", None) is t._procs else t.hooks()
        if hooks is None:  # processors are typed for SDK spans; a LoomSpan has their API
            processor._on_ending(self)  # type: ignore[arg-type]
            processor.on_end(self)
            return
        for p in hooks[1]:
            p._on_ending(self)
        for p in hooks[2]:
            p.on_end(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self._end_time is None:
            self.record_exception(exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    def __repr__(self) -> str:
        return f'LoomSpan(name="{self._name}", context={self._context})'


_UNSET = Status(StatusCode.UNSET)
#: The status of a LoomSpan nobody set one on.
UNSET_STATUS = _UNSET


class CurrentSpan:
    """``with``: makes a span current, ends it on exit (``use_span(end_on_exit=True)``,
    with the same exception handling), without a generator."""

    __slots__ = ("_record", "_set_status", "_token", "span")

    def __init__(self, span: trace_api.Span, record_exception: bool, set_status: bool) -> None:
        self.span = span
        self._record = record_exception
        self._set_status = set_status
        self._token: object = None

    def __enter__(self) -> trace_api.Span:
        self._token = fast_context.attach_value(SPAN_KEY, self.span)
        return self.span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self.span
        try:
            fast_context.detach(self._token)
            # Like use_span: Exception subclasses only (not GeneratorExit, Cancelled...).
            if isinstance(exc, Exception) and span.is_recording():
                if self._record:
                    span.record_exception(exc)
                if self._set_status:
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            span.end()


class FastTracer:
    """Makes :class:`LoomSpan` for one SDK tracer (one instrumentation scope)."""

    __slots__ = (
        "_hooks",
        "_multi",
        "_procs",
        "limits",
        "plain_ids",
        "processor",
        "random_ids",
        "sampler",
        "scope",
        "sdk",
    )

    def __init__(self, sdk: SdkTracer) -> None:
        self.sdk = sdk
        self.scope = sdk._instrumentation_scope
        self.processor = sdk.span_processor
        # The provider's processors, called one by one (see hooks()).
        self._multi = type(self.processor) is SynchronousMultiSpanProcessor and isinstance(
            getattr(self.processor, "_span_processors", None), tuple
        )
        self._procs: object = None
        self._hooks: tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]] | None = None
        self.sampler = sdk.sampler
        self.limits: SpanLimits = sdk._span_limits
        self.random_ids = sdk.id_generator.is_trace_id_random()
        #: The SDK's default id generator: its ids are drawn here directly (same calls).
        self.plain_ids = type(sdk.id_generator) is RandomIdGenerator and SPAN_CONTEXT_LAYOUT

    def start_span(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        context: Context | None = None,
        start_time: int | None = None,
    ) -> trace_api.Span:
        """Starts a span (not current); ``attributes`` (Loom's own, plain values) is
        taken over, not copied. ``context``: the parent's (default: the current one)."""
        sdk = self.sdk
        parent_span: Any = fast_context.get_value(SPAN_KEY, context)
        parent = parent_span.get_span_context() if parent_span is not None else None
        if not sdk._tracer_config.is_enabled:
            return NonRecordingSpan(parent or trace_api.INVALID_SPAN_CONTEXT)
        if parent is None:
            valid = False
        elif SPAN_CONTEXT_LAYOUT and type(parent) is SpanContext:
            # The tuple's fields (the properties' values, without their frames).
            p_trace, _, p_remote, p_flags, p_state, valid = parent
        else:
            p_trace, p_remote, p_flags = parent.trace_id, parent.is_remote, parent.trace_flags
            p_state, valid = parent.trace_state, parent.is_valid
        if not valid:
            parent = None
            if self.plain_ids:
                trace_id = _random.getrandbits(128)
                while not trace_id:  # RandomIdGenerator's rule: never the invalid id
                    trace_id = _random.getrandbits(128)
            else:
                trace_id = sdk.id_generator.generate_trace_id()
        else:
            trace_id = p_trace
        sampler = self.sampler
        delegate: Any = None
        if parent is not None and type(sampler) is ParentBased:
            # TraceFlags.sampled: the SAMPLED bit.
            if p_remote:
                delegate = (
                    sampler._remote_parent_sampled
                    if p_flags & SAMPLED_BIT
                    else sampler._remote_parent_not_sampled
                )
            else:
                delegate = (
                    sampler._local_parent_sampled
                    if p_flags & SAMPLED_BIT
                    else sampler._local_parent_not_sampled
                )
        if delegate is ALWAYS_ON:
            sampled, recording, trace_state = True, True, p_state
            for v in attributes.values():
                if type(v) not in _PLAIN:
                    attributes = {
                        k: v if type(v) in _PLAIN else _clean(v) for k, v in attributes.items()
                    }
                    break
        elif delegate is ALWAYS_OFF:
            sampled, recording, trace_state = False, False, p_state
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes, ())
            sampled = result.decision.is_sampled()  # type: ignore[no-untyped-call]
            recording = result.decision.is_recording()  # type: ignore[no-untyped-call]
            trace_state = result.trace_state  # type: ignore[assignment]  # None: default
            if recording:
                attributes = {}
                for k, v in result.attributes.items():
                    attributes[k] = v if type(v) in _PLAIN else _clean(v)
        # TraceFlags.random_trace_id: the RANDOM_TRACE_ID bit.
        random = self.random_ids if parent is None else bool(p_flags & _RANDOM)
        if sampled:
            flags = _SAMPLED_RANDOM if random else _SAMPLED
        else:
            flags = _NOT_SAMPLED_RANDOM if random else _NOT_SAMPLED
        if self.plain_ids:
            # RandomIdGenerator.generate_span_id, inline (the same random stream); the
            # SpanContext built as its __new__ builds it: both ids are valid here (a
            # valid parent's trace id or one from the same generator, a non-zero
            # 64-bit span id), trace_flags is set and a None trace_state is the default.
            span_id = _random.getrandbits(64)
            while not span_id:
                span_id = _random.getrandbits(64)
            span_context: SpanContext = _new_tuple(
                SpanContext,
                (
                    trace_id,
                    span_id,
                    False,
                    flags,
                    trace_state if trace_state is not None else _DEFAULT_TRACE_STATE,
                    True,
                ),
            )
        else:
            span_context = SpanContext(
                trace_id,
                sdk.id_generator.generate_span_id(),
                is_remote=False,
                trace_flags=flags,
                trace_state=trace_state,
            )
        if not recording:
            return NonRecordingSpan(span_context)
        span = LoomSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            attributes,
            start_time if start_time is not None else time_ns(),
        )
        procs = getattr(self.processor, "_span_processors", None)
        hooks = self._hooks if procs is self._procs else self.hooks()  # hooks(), cached
        if hooks is None:
            self.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        else:
            for p in hooks[0]:
                p.on_start(span, parent_context=context)
        return span

    def hooks(self) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]] | None:
        """The provider's processors whose ``on_start``, ``_on_ending`` and ``on_end``
        do something (None: call the provider's multi-processor itself).

        What the SDK's ``SynchronousMultiSpanProcessor`` does — each processor's hook,
        in order, from the tuple it holds now (a processor added later is seen) —
        without its frame and without calling hooks whose body is empty (the batch
        and simple processors' ``on_start`` and ``_on_ending``)."""
        if not self._multi:
            return None
        procs = self.processor._span_processors
        if procs is not self._procs:
            self._hooks = (
                tuple(p for p in procs if not is_empty(type(p).on_start)),
                tuple(p for p in procs if not is_empty(getattr(type(p), "_on_ending", None))),
                procs,
            )
            self._procs = procs
        return self._hooks

    def start_as_current_span(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        context: Context | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> CurrentSpan:
        """:meth:`start_span`, made current for a ``with`` block and ended after it."""
        return CurrentSpan(
            self.start_span(name, kind, attributes, context),
            record_exception,
            set_status_on_exception,
        )


def is_empty(method: object) -> bool:
    """Whether ``method`` is a plain function whose body does nothing (``pass``, a
    docstring): read from its bytecode, so a hook that gains a body is called."""
    code = getattr(method, "__code__", None)
    if code is None or getattr(method, "__wrapped__", None) is not None:
        return False
    ops = [
        (i.opname, i.argval)
        for i in dis.get_instructions(code)
        if i.opname not in ("RESUME", "NOP", "CACHE")
    ]
    return ops in ([("LOAD_CONST", None), ("RETURN_VALUE", None)], [("RETURN_CONST", None)])


def fast_tracer(tracer: object) -> FastTracer | None:
    """A :class:`FastTracer` for ``tracer`` if it is an SDK tracer whose settings
    :class:`LoomSpan` reproduces exactly, else None (use the tracer itself)."""
    if type(tracer) is not SdkTracer or not _RANDOM:
        return None
    try:  # the SDK internals read here (opentelemetry-sdk 1.45 has them all)
        from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics

        tracer._tracer_config.is_enabled  # noqa: B018
        tracer.id_generator.is_trace_id_random  # noqa: B018
        metrics = tracer._tracer_metrics
        sampler = tracer.sampler
        if type(sampler) is ParentBased:
            sampler._remote_parent_sampled  # noqa: B018
            sampler._local_parent_not_sampled  # noqa: B018
    except (ImportError, AttributeError):
        return None  # an older SDK: its own tracer, as before
    limits = tracer._span_limits
    most = limits.max_span_attributes
    if (
        limits.max_span_attribute_length is not None
        or (most is not None and most < MIN_ATTRIBUTE_LIMIT)
        or not isinstance(metrics, NoOpTracerMetrics)
    ):
        return None
    return FastTracer(tracer)


__all__ = [
    "SPAN_CONTEXT_LAYOUT",
    "SPAN_KEY",
    "UNSET_STATUS",
    "CurrentSpan",
    "FastTracer",
    "LoomSpan",
    "fast_tracer",
    "is_empty",
]

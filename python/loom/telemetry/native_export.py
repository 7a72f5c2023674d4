"""The run's trace file, encoded and written by a Rust thread that never holds the GIL.

What: :class:`NativeFileSpanProcessor` is the span processor ``setup()`` installs for
the ``file`` exporter. Its ``on_end`` reads the finished span's fields and hands them to
``loom._core.SpanExporter`` (``core/src/otlp``), which converts them into Rust values
and queues them; a Rust thread takes batches from the queue, encodes each as one
OTLP/JSON ``ExportTraceServiceRequest`` line — the same bytes
:func:`loom.telemetry.otlp_json.request_json` writes — and appends it to the file.

Why: behind the SDK's ``BatchSpanProcessor``, the Python encoder and file writer cost
~11 µs of CPU per span on the export thread while holding the GIL, and the batch
processor's ``on_end`` checks ``os.getpid()`` and takes its own locks per span. On two
cores all of that is taken from the event loop. Here the loop pays for reading the
span's fields and converting them (a few µs), and nothing else runs under the GIL.

What stays the same: the batch settings and their variables (``OTEL_BSP_MAX_QUEUE_SIZE``,
``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``; the SDK's defaults),
unsampled spans skipped, a full queue dropping its oldest span with a warning (at most
one per 20 s, as the SDK's log filter lets through), one line per batch flushed as it
is written, ``force_flush``/``shutdown`` semantics. After ``os.fork()`` the child gets
a fresh queue and thread on the same file, as the SDK's processor does. Other exporters
(``otlp-http``, ``otlp-grpc``, ``console``) keep the SDK's batch processor;
:class:`~loom.telemetry.exporters.OtlpJsonFileExporter` stays the Python path for code
that uses it directly.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from loom._core import SpanExporter
from loom.telemetry.fast_spans import SAMPLED_BIT, SPAN_CONTEXT_LAYOUT, UNSET_STATUS, LoomSpan

log = logging.getLogger("loom.telemetry")

#: The SDK's batch defaults (``opentelemetry.sdk.trace.export``).
DEFAULT_QUEUE_SIZE = 2048
DEFAULT_SCHEDULE_DELAY_MILLIS = 5000
DEFAULT_BATCH_SIZE = 512
DEFAULT_EXPORT_TIMEOUT_MILLIS = 30000

#: At most one "queue full" warning per this many seconds.
DROP_LOG_INTERVAL_S = 20.0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        log.error("Unable to parse value for %s as integer. Defaulting to %s.", name, default)
        return default


class NativeFileSpanProcessor(SpanProcessor):
    """Writes sampled spans to an OTLP/JSON lines file from a Rust thread.

    Args:
        path: The ``.jsonl`` file (created with its directory on the first batch,
            appended to).
        max_queue_size: Spans queued at most (default ``OTEL_BSP_MAX_QUEUE_SIZE``, else
            2048); when full, the oldest is dropped and counted.
        schedule_delay_millis: Longest wait before a partial batch is written (default
            ``OTEL_BSP_SCHEDULE_DELAY``, else 5000).
        max_export_batch_size: Spans per line at most (default
            ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, else 512).

    Raises:
        ValueError: a size or delay is not positive, or the batch size exceeds the
            queue size (the SDK's rules).
    """

    def __init__(
        self,
        path: str | Path,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
    ) -> None:
        if max_queue_size is None:
            max_queue_size = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_QUEUE_SIZE)
        if schedule_delay_millis is None:
            schedule_delay_millis = _env_int(
                "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY_MILLIS
            )
        if max_export_batch_size is None:
            max_export_batch_size = _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_BATCH_SIZE)
        if max_queue_size <= 0:
            raise ValueError("max_queue_size must be a positive integer.")
        if schedule_delay_millis <= 0:
            raise ValueError("schedule_delay_millis must be positive.")
        if max_export_batch_size <= 0:
            raise ValueError("max_export_batch_size must be a positive integer.")
        if max_export_batch_size > max_queue_size:
            raise ValueError("max_export_batch_size must be less than or equal to max_queue_size.")
        self._path = Path(path)
        self._config = {
            "max_queue_size": max_queue_size,
            "max_export_batch_size": max_export_batch_size,
            "schedule_delay_millis": float(schedule_delay_millis),
        }
        self._start()
        #: Spans dropped because the queue was full, or refused after shutdown.
        self.dropped = 0
        self._last_drop_log = -DROP_LOG_INTERVAL_S
        self._closed = False
        if hasattr(os, "register_at_fork"):
            me = weakref.WeakMethod(self._after_fork)

            def _after_in_child() -> None:
                method = me()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=_after_in_child)

    def _start(self) -> None:
        self._native = SpanExporter(self._path, **self._config)  # type: ignore[arg-type]
        # Registered resources and scopes, by id() (the object is kept, so the id is not
        # reused): the index the Rust side groups spans by.
        self._resources: dict[int, tuple[object, int]] = {}
        self._scopes: dict[int, tuple[object, int]] = {}

    def _after_fork(self) -> None:
        # The parent's thread does not exist in the child: a fresh queue and thread. The
        # parent's exporter, dropped here, knows it is a forked copy and touches neither
        # its lock nor its thread handle.
        self._start()

    @property
    def path(self) -> Path:
        """The file written to."""
        return self._path

    @property
    def exported(self) -> int:
        """Spans written so far."""
        return int(self._native.stats()["exported"])

    def stats(self) -> dict[str, int]:
        """The queue's counters: ``queued``, ``accepted``, ``dropped``, ``exported``,
        ``failed`` (lost to write errors)."""
        return self._native.stats()

    def _resource_index(self, res: Any) -> int:
        entry = self._resources.get(id(res))
        if entry is None:
            index = self._native.add_resource(res.attributes, res.schema_url or None)
            self._resources[id(res)] = entry = (res, index)
        return entry[1]

    def _scope_index(self, scope: Any) -> int | None:
        if scope is None:
            return None
        entry = self._scopes.get(id(scope))
        if entry is None:
            index = self._native.add_scope(
                scope.name,
                scope.version or None,
                getattr(scope, "attributes", None) or None,
                scope.schema_url or None,
            )
            self._scopes[id(scope)] = entry = (scope, index)
        return entry[1]

    def on_end(self, span: ReadableSpan) -> None:
        if type(span) is LoomSpan:
            # Loom's own spans (nearly all of a run's): their fields read directly, not
            # through ReadableSpan's properties (which copy events and links into
            # tuples and wrap the attributes in a proxy). A test compares both paths.
            ctx = span._context
            if SPAN_CONTEXT_LAYOUT and type(ctx) is SpanContext:
                plain = True
                if not ctx[3] & SAMPLED_BIT:  # trace_flags, read as the tuple's field
                    return
            else:
                plain = False
                if ctx is None or not ctx.trace_flags & SAMPLED_BIT:
                    return
            parent = span._parent
            if (
                plain
                and (parent is None or type(parent) is SpanContext)
                and span._status is UNSET_STATUS
                and type(span._events) is tuple
                and not span._events
                and type(span._links) is tuple
                and not span._links
            ):
                # The common case (no events, links or status): push_plain reads the
                # span's and the parent's ids from their SpanContext tuples, with 8
                # arguments fewer than push. A test compares the records of both.
                # (Inline, not a method: one frame less per span.)
                state = ctx[4]
                res = span._resource
                scope = span._instrumentation_scope
                entry = self._resources.get(id(res))
                sentry = self._scopes.get(id(scope))
                try:
                    result = self._native.push_plain(
                        ctx,
                        None if state is DEFAULT_TRACE_STATE or not state else state.to_header(),
                        parent,
                        span._name,
                        span._kind._value_ + 1,
                        span._start_time,
                        span._end_time,
                        span._attrs,
                        span._dropped,
                        entry[1] if entry is not None else self._resource_index(res),
                        sentry[1] if sentry is not None else self._scope_index(scope),
                    )
                except (TypeError, ValueError, OverflowError) as exc:
                    self.dropped += 1
                    log.warning("cannot export span %r: %s", span._name, exc)
                    return
                if result:
                    self._count_drop(result)
                return
            self._push(
                ctx,
                parent,
                span._name,
                span._kind,
                span._start_time,
                span._end_time,
                span._attrs,
                span._dropped,
                span._events,
                span._events.dropped if type(span._events) is BoundedList else 0,
                span._links,
                span._links.dropped if type(span._links) is BoundedList else 0,
                span._status,
                span._resource,
                span._instrumentation_scope,
            )
            return
        ctx = span.context
        if ctx is None or not ctx.trace_flags & SAMPLED_BIT:
            return
        self._push(
            ctx,
            span.parent,
            span.name,
            span.kind,
            span.start_time,
            span.end_time,
            span.attributes,
            span.dropped_attributes,
            span.events,
            span.dropped_events,
            span.links,
            span.dropped_links,
            span.status,
            span.resource,
            span.instrumentation_scope,
        )

    def _push(
        self,
        ctx: Any,
        parent: Any,
        name: str,
        kind: Any,
        start_time: int | None,
        end_time: int | None,
        attributes: Any,
        dropped_attributes: int,
        events: Any,
        dropped_events: int,
        links: Any,
        dropped_links: int,
        status: Any,
        res: Any,
        scope: Any,
    ) -> None:
        state = ctx.trace_state
        code = status.status_code._value_  # _value_: .value is a slow enum property
        if events:
            events = [(e.timestamp, e.name, e.attributes, e.dropped_attributes) for e in events]
        else:
            events = None
        if links:
            links = [
                (
                    lk.context.trace_id,
                    lk.context.span_id,
                    lk.context.trace_state.to_header() if lk.context.trace_state else None,
                    lk.attributes,
                    lk.dropped_attributes,
                    lk.context.is_remote,
                )
                for lk in links
            ]
        else:
            links = None
        entry = self._resources.get(id(res))
        sentry = self._scopes.get(id(scope))
        try:
            result = self._native.push(
                ctx.trace_id,
                ctx.span_id,
                state.to_header() if state else None,
                parent.span_id if parent is not None else None,
                parent is not None and parent.is_remote,
                name,
                kind._value_ + 1,  # OTLP's SpanKind is the SDK's + 1
                start_time,
                end_time,
                attributes,
                dropped_attributes,
                events,
                dropped_events,
                links,
                dropped_links,
                code,
                status.description if code else None,
                entry[1] if entry is not None else self._resource_index(res),
                sentry[1] if sentry is not None else self._scope_index(scope),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            self.dropped += 1
            log.warning("cannot export span %r: %s", name, exc)
            return
        if result:
            self._count_drop(result)

    def _count_drop(self, result: int) -> None:
        self.dropped += 1
        if result == 2:
            log.info("Shutdown called, ignoring Span.")
            return
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            log.warning(
                "Queue full, dropping Span (%d dropped so far; OTEL_BSP_MAX_QUEUE_SIZE "
                "raises the queue size).",
                self.dropped,
            )

    def force_flush(self, timeout_millis: int = DEFAULT_EXPORT_TIMEOUT_MILLIS) -> bool:
        if self._closed:
            return False
        return bool(self._native.flush(float(timeout_millis)))

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._native.shutdown(float(DEFAULT_EXPORT_TIMEOUT_MILLIS)):
            log.warning("the span writer did not finish within 30 s: %s", self._path)
        stats = self._native.stats()
        if stats["dropped"]:
            log.warning(
                "%d spans were dropped (queue full); OTEL_BSP_MAX_QUEUE_SIZE raises the queue size",
                stats["dropped"],
            )


__all__ = ["NativeFileSpanProcessor"]

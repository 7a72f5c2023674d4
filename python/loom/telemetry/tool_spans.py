"""Spans of tool calls: ``execute_tool {tool}`` around each call, and the spans the
Rust core recorded inside one (a path resolution, a sandboxed process), replayed as its
children (``docs/observability.md`` says why they travel this way)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from loom.telemetry.content import content_text
from loom.telemetry.state import Telemetry

#: ``loom.tool.outcome`` of an exception, by class name (anything else: ``error``).
_OUTCOMES = {
    "ToolDenied": "denied",
    "ToolTimeout": "timeout",
    "ToolNotFound": "not_found",
    "ToolArgumentsInvalid": "invalid_arguments",
    "CancelledError": "cancelled",
}


class ToolSpanHandle:
    """What a tool call may add to its span."""

    def __init__(self, telemetry: Telemetry, span: Span) -> None:
        self.telemetry = telemetry
        self.span = span

    def set_result(self, result: Any) -> None:
        if self.telemetry.capture_content() and self.span.is_recording():
            self.span.set_attribute("gen_ai.tool.call.result", content_text(result))


class ToolSpan:
    """``with``: the ``execute_tool`` span of one call, made current; yields the call's
    :class:`ToolSpanHandle`. An exception from the block is recorded on the span
    (``error.type``, ``loom.tool.outcome``, error status) and propagates."""

    __slots__ = ("_arguments", "_cm", "_handle", "_telemetry")

    def __init__(
        self, telemetry: Telemetry, cm: AbstractContextManager[Span], arguments: Any
    ) -> None:
        self._telemetry = telemetry
        self._cm = cm
        self._arguments = arguments
        self._handle: ToolSpanHandle | None = None

    def __enter__(self) -> ToolSpanHandle:
        telemetry = self._telemetry
        span = self._cm.__enter__()
        if telemetry.capture_content() and span.is_recording():
            span.set_attribute("gen_ai.tool.call.arguments", content_text(self._arguments))
        handle = self._handle = ToolSpanHandle(telemetry, span)
        return handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._handle is not None
        span = self._handle.span
        try:
            if exc is not None:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_attribute("loom.tool.outcome", _OUTCOMES.get(type(exc).__name__, "error"))
                span.set_status(Status(StatusCode.ERROR, str(exc)[:512]))
            else:
                span.set_attribute("loom.tool.outcome", "ok")
        finally:
            suppressed = self._cm.__exit__(exc_type, exc, tb)
        return suppressed


def tool_span(telemetry: Telemetry, name: str, call_id: str, spec: Any, arguments: Any) -> ToolSpan:
    """``execute_tool {name}`` around one tool call (``spec``: its ``ToolSpec``)."""
    source = getattr(spec, "source", "")
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": "function" if source == "python" else "extension",
        "loom.tool.source": str(source),
    }
    description = getattr(spec, "description", None)
    if description:
        attrs["gen_ai.tool.description"] = description[:256]
    fast = telemetry.fast_tracer()
    cm: AbstractContextManager[Span]
    if fast is not None:
        cm = fast.start_as_current_span(
            f"execute_tool {name}", SpanKind.INTERNAL, attrs, None, record_exception=False
        )
    else:
        cm = telemetry.tracer().start_as_current_span(
            f"execute_tool {name}", kind=SpanKind.INTERNAL, attributes=attrs, record_exception=False
        )
    return ToolSpan(telemetry, cm, arguments)


def emit_native_spans(telemetry: Telemetry, spans_json: str) -> None:
    """Replays the spans a native tool call recorded in Rust (JSON text, as the core
    returns them) under the current span, if that one records."""
    if not spans_json or not telemetry.active:
        return
    parent = trace.get_current_span()
    if parent.is_recording():
        emit_records(telemetry, parent, json.loads(spans_json))


def emit_records(telemetry: Telemetry, parent: Span, records: Sequence[Mapping[str, Any]]) -> None:
    """Replays span records ``{name, start_unix_nanos, end_unix_nanos, attributes,
    status_error, parent}`` made in Rust (``parent``: index of an earlier record, or
    None for ``parent`` itself)."""
    made: list[Span] = []
    ctx0 = trace.set_span_in_context(parent)
    tracer = telemetry.tracer()
    for rec in records:
        p = rec.get("parent")
        ctx = trace.set_span_in_context(made[p]) if isinstance(p, int) and p < len(made) else ctx0
        span = tracer.start_span(
            str(rec.get("name", "rust")),
            context=ctx,
            start_time=int(rec.get("start_unix_nanos") or 0) or None,
            attributes={
                k: v
                for k, v in dict(rec.get("attributes") or {}).items()
                if isinstance(v, (str, bool, int, float))
            },
        )
        if rec.get("status_error"):
            span.set_status(Status(StatusCode.ERROR, str(rec["status_error"])))
        made.append(span)
    # End children before parents so exporters see consistent trees.
    for rec, span in reversed(list(zip(records, made, strict=True))):
        span.end(end_time=int(rec.get("end_unix_nanos") or 0) or None)


__all__ = ["ToolSpan", "ToolSpanHandle", "emit_native_spans", "emit_records", "tool_span"]

"""Span helpers shared by the bus, the tools and the agents."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from loom.telemetry import capture_content

_tracer = trace.get_tracer("loom")

#: Content attributes are truncated to this many characters.
MAX_CONTENT = 8192


def tracer() -> trace.Tracer:
    """Loom's tracer, from the global provider."""
    return _tracer


def _content(value: Any) -> str:
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_CONTENT else text[:MAX_CONTENT] + "…"


class ToolSpanHandle:
    """What a tool call may add to its span."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def set_result(self, result: Any) -> None:
        if capture_content() and self.span.is_recording():
            self.span.set_attribute("gen_ai.tool.call.result", _content(result))

    def add_child_records(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Emits spans recorded in Rust as children of this span (see
        ``docs/observability.md`` for why they travel this way)."""
        if not records or not self.span.is_recording():
            return
        emit_records(self.span, records)


def emit_records(parent: Span, records: Sequence[Mapping[str, Any]]) -> None:
    """Replays span records ``{name, start_ns, end_ns, attributes, error, parent}``
    (``parent``: index of an earlier record, or None for ``parent`` itself)."""
    made: list[Span] = []
    ctx0 = trace.set_span_in_context(parent)
    for rec in records:
        p = rec.get("parent")
        ctx = trace.set_span_in_context(made[p]) if isinstance(p, int) and p < len(made) else ctx0
        span = _tracer.start_span(
            str(rec.get("name", "rust")),
            context=ctx,
            start_time=int(rec.get("start_ns") or 0) or None,
            attributes={
                k: v
                for k, v in dict(rec.get("attributes") or {}).items()
                if isinstance(v, (str, bool, int, float))
            },
        )
        if rec.get("error"):
            span.set_status(Status(StatusCode.ERROR, str(rec["error"])))
        made.append(span)
    # End children before parents so exporters see consistent trees.
    for rec, span in reversed(list(zip(records, made, strict=True))):
        span.end(end_time=int(rec.get("end_ns") or 0) or None)


@contextmanager
def tool_span(name: str, call_id: str, spec: Any, arguments: Any) -> Iterator[ToolSpanHandle]:
    """``execute_tool {name}`` around one tool call."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": "function" if getattr(spec, "source", "") == "python" else "extension",
        "loom.tool.source": str(getattr(spec, "source", "")),
    }
    if getattr(spec, "description", None):
        attrs["gen_ai.tool.description"] = spec.description[:256]
    with _tracer.start_as_current_span(
        f"execute_tool {name}", kind=SpanKind.INTERNAL, attributes=attrs, record_exception=False
    ) as span:
        if capture_content() and span.is_recording():
            span.set_attribute("gen_ai.tool.call.arguments", _content(arguments))
        try:
            yield ToolSpanHandle(span)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_attribute("loom.tool.outcome", _outcome(exc))
            span.set_status(Status(StatusCode.ERROR, str(exc)[:512]))
            raise
        else:
            span.set_attribute("loom.tool.outcome", "ok")


def _outcome(exc: BaseException) -> str:
    kind = type(exc).__name__
    return {
        "ToolDenied": "denied",
        "ToolTimeout": "timeout",
        "ToolNotFound": "not_found",
        "ToolArgumentsInvalid": "invalid_arguments",
        "CancelledError": "cancelled",
    }.get(kind, "error")

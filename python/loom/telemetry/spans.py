"""Span helpers shared by the bus, the tools and the agents."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from loom.telemetry import capture_content

_cache: list[Any] = [None, None]  # [provider, tracer]

#: Content attributes are truncated to this many characters.
MAX_CONTENT = 8192


def tracer() -> trace.Tracer:
    """Loom's tracer, from the current global provider (re-fetched when it changes,
    unlike a module-level ``get_tracer`` that would pin the first one)."""
    provider = trace.get_tracer_provider()
    if _cache[0] is not provider:
        from loom import __version__

        _cache[0] = provider
        _cache[1] = provider.get_tracer("loom", __version__)
    result: trace.Tracer = _cache[1]
    return result


def _content(value: Any) -> str:
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        # Not JSON, or nested too deep for json.dumps (the call itself refuses such a
        # value with its own error; the span must not raise in its place).
        try:
            text = repr(value)
        except RecursionError:
            text = f"<{type(value).__name__} nested too deep to show>"
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
    """Replays span records ``{name, start_unix_nanos, end_unix_nanos, attributes,
    status_error, parent}`` made in Rust (``parent``: index of an earlier record, or
    None for ``parent`` itself)."""
    made: list[Span] = []
    ctx0 = trace.set_span_in_context(parent)
    for rec in records:
        p = rec.get("parent")
        ctx = trace.set_span_in_context(made[p]) if isinstance(p, int) and p < len(made) else ctx0
        span = tracer().start_span(
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
    with tracer().start_as_current_span(
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


# -- the bus: W3C trace context in envelope headers --------------------------------------


def inject(headers: dict[str, str]) -> None:
    """Adds ``traceparent``/``tracestate`` of the current span to ``headers``."""
    from opentelemetry.propagate import inject as _inject

    _inject(headers)


def publish_span(topic: str, type: str, correlation_id: str | None) -> Any:
    """A ``send {topic}`` PRODUCER span (messaging conventions), or None when no
    recording span is current (nothing to link the event to)."""
    if not trace.get_current_span().is_recording():
        return None
    attrs: dict[str, Any] = {
        "messaging.system": "loom",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": topic,
        "loom.event.type": type,
    }
    if correlation_id:
        attrs["messaging.message.conversation_id"] = correlation_id
    return tracer().start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attrs)


@contextmanager
def invoke_agent_span(agent_id: str, event: Any) -> Iterator[Span]:
    """``invoke_agent {agent}`` for one handled event, continuing the trace of the
    publisher (its ``traceparent`` header)."""
    from opentelemetry.propagate import extract

    headers = event.headers
    parent = extract(headers) if headers else None
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent_id,
        "messaging.system": "loom",
        "messaging.operation.type": "process",
        "messaging.destination.name": event.topic,
        "messaging.message.id": event.id,
        "loom.event.type": event.type,
    }
    if event.correlation_id:
        attrs["messaging.message.conversation_id"] = event.correlation_id
    if event.source:
        attrs["loom.event.source"] = event.source
    with tracer().start_as_current_span(
        f"invoke_agent {agent_id}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span

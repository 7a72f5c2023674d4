"""Spans of agents: the bus (W3C trace context in envelope headers, ``send`` and
``invoke_agent`` per event) and a cognitive agent's run.

Callers check ``telemetry.active`` first, so none of this runs while nothing records.
Which bus spans are made follows ``[telemetry] bus_spans`` (:func:`state.bus_spans`):
the trace context travels with every event whatever the level.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from loom.telemetry import fast_context
from loom.telemetry.propagation import extract_context, inject_context
from loom.telemetry.state import Telemetry, bus_spans

#: Topics of agents' inboxes: replies and direct messages go there, never requests.
INBOX_PREFIX = "_INBOX."


class EventLike(Protocol):
    """What the agent spans read of an event (``loom.Envelope`` fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def source(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def headers(self) -> dict[str, str] | None: ...


def publish_span(
    telemetry: Telemetry,
    topic: str,
    type: str,
    correlation_id: str | None,
    reply_to: str | None = None,
) -> AbstractContextManager[Span] | None:
    """A ``send {topic}`` PRODUCER span (messaging conventions), or None when no
    recording span is current (nothing to link the event to) or ``bus_spans`` leaves
    this event out: ``"none"``; ``"requests"`` and the event asks for no answer (no
    ``reply_to``, or it goes to an inbox: a reply or a direct message)."""
    level = bus_spans()
    if level != "all" and (level == "none" or reply_to is None or topic.startswith(INBOX_PREFIX)):
        return None
    if not fast_context.current_span().is_recording():
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
    fast = telemetry.fast_tracer()
    if fast is not None:
        return fast.start_as_current_span(f"send {topic}", SpanKind.PRODUCER, attrs)
    cm: AbstractContextManager[Span] = telemetry.tracer().start_as_current_span(
        f"send {topic}", kind=SpanKind.PRODUCER, attributes=attrs
    )
    return cm


class _InParentContext:
    """``with``: no span, the block runs in ``parent``'s context (``bus_spans = "none"``)."""

    __slots__ = ("_parent", "_token")

    def __init__(self, parent: Context | None) -> None:
        self._parent = parent
        self._token: object = None

    def __enter__(self) -> Span:
        if self._parent is not None:
            self._token = fast_context.attach(self._parent)
        return trace.INVALID_SPAN

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            fast_context.detach(self._token)


def invoke_agent_span(
    telemetry: Telemetry, agent_id: str, event: EventLike
) -> AbstractContextManager[Span]:
    """``invoke_agent {agent}`` for one handled event (``with``: current in the block,
    ended after it), continuing the trace of the publisher (its ``traceparent``
    header). With ``bus_spans = "none"`` no span: the block runs in the publisher's
    trace context (and gets a non-recording span)."""
    headers = event.headers
    parent = extract_context(headers) if headers else None
    if bus_spans() == "none":
        return _InParentContext(parent)
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
    fast = telemetry.fast_tracer()
    if fast is not None:
        return fast.start_as_current_span(
            f"invoke_agent {agent_id}", SpanKind.CONSUMER, attrs, parent, False, False
        )
    cm: AbstractContextManager[Span] = telemetry.tracer().start_as_current_span(
        f"invoke_agent {agent_id}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    )
    return cm


def mark_failed(span: Span, exc: BaseException) -> None:
    """Records a handler's exception on its span (type, message, error status)."""
    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:512]))
    span.record_exception(exc)


# -- a cognitive agent's run -------------------------------------------------------------


def cognitive_span(
    telemetry: Telemetry, agent_id: str, max_iterations: int
) -> AbstractContextManager[Span]:
    """``invoke_agent {agent}`` around one goal of a cognitive agent (its LLM turns
    and tool calls are children)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent_id,
        "loom.cognitive.max_iterations": max_iterations,
    }
    fast = telemetry.fast_tracer()
    if fast is not None:
        return fast.start_as_current_span(f"invoke_agent {agent_id}", SpanKind.INTERNAL, attrs)
    cm: AbstractContextManager[Span] = telemetry.tracer().start_as_current_span(
        f"invoke_agent {agent_id}", attributes=attrs
    )
    return cm


def end_cognitive_span(
    span: Span,
    *,
    input_tokens: int,
    output_tokens: int,
    iterations: int,
    tool_calls: int,
    cost_usd: float,
    error: str | None,
) -> None:
    """Records how a cognitive agent's run went (the span ends with its block)."""
    if not span.is_recording():
        return
    span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
    span.set_attribute("loom.cognitive.iterations", iterations)
    span.set_attribute("loom.cognitive.tool_calls", tool_calls)
    span.set_attribute("loom.cost.usd", cost_usd)
    if error:
        span.set_attribute("error.type", "CognitiveError")
        span.set_status(Status(StatusCode.ERROR, error[:256]))


__all__ = [
    "EventLike",
    "cognitive_span",
    "end_cognitive_span",
    "inject_context",
    "invoke_agent_span",
    "mark_failed",
    "publish_span",
]

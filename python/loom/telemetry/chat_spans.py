"""LLM calls: one ``chat {model}`` span (kind CLIENT, scope ``loom.llm``) per call.

Attribute names follow the OpenTelemetry GenAI semantic conventions as of semconv 1.44
(``gen_ai.*``), plus the seed's ``llm.*`` names so existing dashboards keep working.
Retries are span events. Message content is recorded only when capture is on
(:meth:`Telemetry.capture_content`), as whole JSON (not cut: it is structured data). The
API key is never recorded: it lives only in the client's headers, which no code here
reads. The GenAI metrics of a call come from :func:`loom.telemetry.metrics.record_llm_call`,
not from these spans (they are recorded for unsampled calls too).

Every function takes an optional ``telemetry`` (default: the process's,
:data:`loom.telemetry.state.DEFAULT`) for a client that knows its runtime.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from loom.telemetry.state import DEFAULT, Telemetry

#: The instrumentation scope of ``chat`` spans.
SCOPE = "loom.llm"


class ChatUsage(Protocol):
    """Token counts of one call (``loom.llm.Usage`` fits)."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...


class ChatMessage(Protocol):
    """The answer as a message (``loom.llm.Message`` fits)."""

    def model_dump(self, *, exclude_none: bool = ..., mode: str = ...) -> dict[str, Any]: ...


class ChatResult(Protocol):
    """What the span records of an answer (``loom.llm.LLMResponse`` fits)."""

    @property
    def id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def usage(self) -> ChatUsage: ...
    @property
    def cost_usd(self) -> float: ...
    @property
    def cached(self) -> bool: ...
    @property
    def provider(self) -> str: ...
    @property
    def message(self) -> ChatMessage: ...


def start_chat_span(
    *,
    provider: str,
    system: str,
    body: dict[str, Any],
    host: str,
    port: int | None,
    stream: bool,
    telemetry: Telemetry | None = None,
) -> Span:
    """Start (not activate) the span of one call; its parent is the current span."""
    telemetry = telemetry or DEFAULT
    model = str(body.get("model", ""))
    fast = telemetry.fast_tracer(SCOPE)
    span: Span
    if fast is None:
        span = telemetry.tracer(SCOPE).start_span(f"chat {model}", kind=SpanKind.CLIENT)
    else:
        span = fast.start_span(f"chat {model}", SpanKind.CLIENT, {})
    if not span.is_recording():
        return span
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": system,
        "gen_ai.request.model": model,
        "gen_ai.request.stream": stream,
        "server.address": host,
        "llm.provider": provider,
        "llm.model": model,
    }
    if port is not None:
        attrs["server.port"] = port
    # Prompts loaded from files (loom.prompts.Prompt) name their file and version.
    files, versions = [], []
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        file = getattr(content, "file", None)
        if isinstance(file, str):
            files.append(file)
            versions.append(getattr(content, "version", None) or "")
    if files:
        attrs["loom.prompt.file"] = files
        attrs["loom.prompt.version"] = versions
    for key, attr in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("seed", "gen_ai.request.seed"),
    ):
        v = body.get(key)
        if v is not None:
            attrs[attr] = v
    if telemetry.capture_content():
        attrs["gen_ai.input.messages"] = json.dumps(body.get("messages", []), default=str)
        if body.get("tools"):
            attrs["gen_ai.tool.definitions"] = json.dumps(body["tools"], default=str)
    span.set_attributes(attrs)
    return span


def retry_event(span: Span, *, attempt: int, delay: float, reason: str) -> None:
    """Record one retry decision."""
    if span.is_recording():
        span.add_event(
            "retry", {"retry.attempt": attempt, "retry.delay_s": delay, "error.type": reason}
        )


def first_chunk(span: Span, seconds: float) -> None:
    """Time from request to the first streamed chunk."""
    if span.is_recording():
        span.set_attribute("gen_ai.response.time_to_first_chunk", seconds)


def end_ok(
    span: Span, response: ChatResult, latency_ms: float, *, telemetry: Telemetry | None = None
) -> None:
    """Record the response and end the span."""
    if span.is_recording():
        u = response.usage
        attrs: dict[str, Any] = {
            "gen_ai.response.id": response.id,
            "gen_ai.response.model": response.model,
            # A tuple: what the SDK makes of a list, so no span has to convert it.
            "gen_ai.response.finish_reasons": (response.finish_reason or "",),
            "gen_ai.usage.input_tokens": u.prompt_tokens,
            "gen_ai.usage.output_tokens": u.completion_tokens,
            "llm.tokens.prompt": u.prompt_tokens,
            "llm.tokens.completion": u.completion_tokens,
            "llm.latency.ms": latency_ms,
            "llm.cost.usd": response.cost_usd,
        }
        if u.cached_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = u.cached_tokens
        if u.reasoning_tokens:
            attrs["gen_ai.usage.reasoning.output_tokens"] = u.reasoning_tokens
        if response.cached:
            attrs["llm.cache.hit"] = True
        if response.provider:
            attrs["llm.provider"] = response.provider
        if (telemetry or DEFAULT).capture_content():
            out = response.message.model_dump(exclude_none=True, mode="json")
            attrs["gen_ai.output.messages"] = json.dumps([out], default=str)
        span.set_attributes(attrs)
    span.end()


def end_error(span: Span, exc: BaseException, latency_ms: float) -> None:
    """Record an error (type and message, which carry no secret) and end the span."""
    if span.is_recording():
        status = getattr(exc, "status_code", None)
        span.set_attribute("error.type", str(status) if status else type(exc).__name__)
        span.set_attribute("llm.latency.ms", latency_ms)
        span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
    span.end()


__all__ = [
    "SCOPE",
    "ChatResult",
    "end_error",
    "end_ok",
    "first_chunk",
    "retry_event",
    "start_chat_span",
]

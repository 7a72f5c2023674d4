"""OpenTelemetry for LLM calls: one ``chat {model}`` span (kind CLIENT) per call.

Attribute names follow the OpenTelemetry GenAI semantic conventions as of semconv 1.44
(``gen_ai.*``), plus the seed's ``llm.*`` names so existing dashboards keep working.
Retries are span events. Message content is recorded only when capture is switched on
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` or
:func:`set_capture_content`). The API key is never recorded: it lives only in the
client's headers, which no code here reads.

Library code only uses the global tracer provider; exporters are installed by the
runtime. ``opentelemetry`` is imported on the first call, not with ``loom``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from .types import LLMResponse

_cache: list[Any] = [None, None]  # [provider, tracer]
_capture: bool | None = None


def set_capture_content(enabled: bool | None) -> None:
    """Record prompts and completions on LLM spans (``None``: follow ``loom.telemetry``
    and the environment)."""
    global _capture
    _capture = enabled


def capture_content() -> bool:
    """Whether message content goes on spans now: this module's switch, else
    ``loom.telemetry``'s (``[telemetry] capture_content``), else the environment."""
    if _capture is not None:
        return _capture
    try:
        from loom.telemetry import capture_content as runtime_switch
    except ImportError:
        value = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(runtime_switch())


def tracer() -> Tracer:
    """The ``loom.llm`` tracer of the current global provider, re-fetched when the
    provider changes (a tracer fetched once would stay pinned to the first provider)."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if _cache[0] is not provider:
        _cache[0] = provider
        _cache[1] = provider.get_tracer("loom.llm")
    result: Tracer = _cache[1]
    return result


def start_chat_span(
    *,
    provider: str,
    system: str,
    body: dict[str, Any],
    host: str,
    port: int | None,
    stream: bool,
) -> Span:
    """Start (not activate) the span of one call; its parent is the current span."""
    from opentelemetry.trace import SpanKind

    model = str(body.get("model", ""))
    span = tracer().start_span(f"chat {model}", kind=SpanKind.CLIENT)
    if span.is_recording():
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
        if capture_content():
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


def end_ok(span: Span, response: LLMResponse, latency_ms: float) -> None:
    """Record the response and end the span."""
    if span.is_recording():
        u = response.usage
        attrs: dict[str, Any] = {
            "gen_ai.response.id": response.id,
            "gen_ai.response.model": response.model,
            "gen_ai.response.finish_reasons": [response.finish_reason or ""],
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
        if capture_content():
            out = response.message.model_dump(exclude_none=True, mode="json")
            attrs["gen_ai.output.messages"] = json.dumps([out], default=str)
        span.set_attributes(attrs)
    span.end()


def end_error(span: Span, exc: BaseException, latency_ms: float) -> None:
    """Record an error (type and message, which carry no secret) and end the span."""
    if span.is_recording():
        from opentelemetry.trace import Status, StatusCode

        status = getattr(exc, "status_code", None)
        span.set_attribute("error.type", str(status) if status else type(exc).__name__)
        span.set_attribute("llm.latency.ms", latency_ms)
        span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
    span.end()


__all__ = ["capture_content", "set_capture_content", "tracer"]

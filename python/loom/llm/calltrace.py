"""The telemetry of one provider's calls: the ``chat {model}`` span
(:mod:`loom.telemetry.chat_spans`) and the GenAI client metrics
(:func:`loom.telemetry.metrics.record_llm_call`), recorded together once per call,
retries included."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from loom.telemetry import chat_spans as _otel

from .types import LLMResponse


class CallTrace:
    """Span and metrics of the calls of one provider.

    Args:
        provider: The provider's configured name.
        system: ``gen_ai.provider.name``: the kind of server, else the configured name.
        request_model: The configured model.
    """

    __slots__ = ("_host", "_port", "provider", "request_model", "system")

    def __init__(self, provider: str, system: str, request_model: str) -> None:
        self.provider = provider
        self.system = system
        self.request_model = request_model
        self._host = ""
        self._port: int | None = None

    def start(self, body: dict[str, Any], *, stream: bool, base_url: str) -> Any:
        """The span of one call, started now (the server address is known by now, even
        for a served model)."""
        if not self._host:
            parts = urlsplit(base_url)
            self._host, self._port = parts.hostname or "", parts.port
        return _otel.start_chat_span(
            provider=self.provider,
            system=self.system,
            body=body,
            host=self._host,
            port=self._port,
            stream=stream,
        )

    @staticmethod
    def retry(span: Any, attempt: int, delay: float, reason: str) -> None:
        """A retry, as an event on the call's span."""
        _otel.retry_event(span, attempt=attempt, delay=delay, reason=reason)

    @staticmethod
    def first_chunk(span: Any, seconds: float) -> None:
        """Time to the first streamed content."""
        _otel.first_chunk(span, seconds)

    def ok(self, span: Any, response: LLMResponse) -> None:
        """Ends the call's span and records the metrics of its answer."""
        from loom.telemetry.metrics import record_llm_call

        u = response.usage
        record_llm_call(
            provider=self.system,
            request_model=self.request_model,
            duration_s=response.latency_ms / 1000.0,
            response_model=response.model or None,
            input_tokens=u.prompt_tokens,
            output_tokens=u.completion_tokens,
            server_address=self._host or None,
            server_port=self._port,
        )
        _otel.end_ok(span, response, response.latency_ms)

    def error(self, span: Any, exc: BaseException, started: float) -> None:
        """Ends the call's span with its error and records the failed call."""
        from loom.telemetry.metrics import record_llm_call

        latency_ms = (time.perf_counter() - started) * 1000.0
        status = getattr(exc, "status_code", None)
        record_llm_call(
            provider=self.system,
            request_model=self.request_model,
            duration_s=latency_ms / 1000.0,
            error_type=str(status) if status else type(exc).__name__,
            server_address=self._host or None,
            server_port=self._port,
        )
        _otel.end_error(span, exc, latency_ms)


__all__ = ["CallTrace"]

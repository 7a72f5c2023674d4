"""Metrics: GenAI client operation duration and token usage, and the bus counters.

Instruments come from the *current* global meter provider (re-fetched when it changes),
like the tracer. Nothing here does anything until a provider is installed
(:func:`loom.telemetry.setup`, ``loom run``).

LLM calls: the LLM client reports each finished call with :func:`record_llm_call`.
Until it does, :class:`ChatSpanMetrics` (a span processor that ``setup()`` installs)
derives the same two histograms from finished ``chat`` CLIENT spans; the first call of
:func:`record_llm_call` switches that fallback off, so nothing is counted twice. The
fallback only sees sampled spans; the hook sees every call.

Bus: :func:`observe_bus` registers observable instruments that read
``runtime.bus.stats()`` at each collection: ``loom.bus.published``,
``loom.bus.delivered``, ``loom.bus.dropped`` (counters, events since the bus was
created) and ``loom.bus.queue.depth`` (gauge, per subscription pattern and QoS).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

    from loom.runtime import Runtime

log = logging.getLogger("loom.telemetry")

#: Bucket boundaries the GenAI conventions advise for the two client histograms.
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

#: ``gen_ai.operation.name`` values of client calls that the histograms cover.
CLIENT_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})

_lock = threading.Lock()
_genai: dict[int, tuple[Any, Histogram, Histogram]] = {}  # id(provider) -> instruments
_hook_used = [False]


def _histograms(provider: MeterProvider | None = None) -> tuple[Histogram, Histogram]:
    from opentelemetry import metrics

    mp = provider if provider is not None else metrics.get_meter_provider()
    entry = _genai.get(id(mp))
    if entry is None or entry[0] is not mp:
        from loom import __version__

        with _lock:
            meter = mp.get_meter("loom", __version__)
            duration = meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
            tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            )
            if len(_genai) > 8:  # providers come and go in tests; keep the cache small
                _genai.clear()
            entry = _genai[id(mp)] = (mp, duration, tokens)
    return entry[1], entry[2]


def record_llm_call(
    *,
    provider: str,
    request_model: str,
    duration_s: float,
    operation: str = "chat",
    response_model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    error_type: str | None = None,
    server_address: str | None = None,
    server_port: int | None = None,
) -> None:
    """Records one finished LLM call on ``gen_ai.client.operation.duration`` and
    ``gen_ai.client.token.usage`` (the hook for the LLM client; call it once per call,
    retries included, before ending the call's span).

    Args:
        provider: ``gen_ai.provider.name``.
        request_model: ``gen_ai.request.model``.
        duration_s: Seconds from request to the complete answer (or the error).
        operation: ``gen_ai.operation.name``.
        response_model: ``gen_ai.response.model``, if known.
        input_tokens: Prompt tokens, if known (not recorded on errors).
        output_tokens: Completion tokens, if known.
        error_type: ``error.type`` when the call failed.
        server_address: ``server.address``.
        server_port: ``server.port``.
    """
    _hook_used[0] = True
    _record(
        None,
        operation,
        provider,
        request_model,
        response_model,
        duration_s,
        input_tokens,
        output_tokens,
        error_type,
        server_address,
        server_port,
    )


def _record(
    meter_provider: MeterProvider | None,
    operation: str,
    provider: str,
    request_model: str,
    response_model: str | None,
    duration_s: float,
    input_tokens: int | None,
    output_tokens: int | None,
    error_type: str | None,
    server_address: str | None,
    server_port: int | None,
) -> None:
    duration, tokens = _histograms(meter_provider)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request_model,
    }
    if response_model:
        attrs["gen_ai.response.model"] = response_model
    if server_address:
        attrs["server.address"] = server_address
    if server_port is not None:
        attrs["server.port"] = server_port
    if error_type:
        attrs["error.type"] = error_type
    duration.record(max(0.0, duration_s), attrs)
    if error_type:
        return  # the conventions record token usage of successful calls only
    if input_tokens is not None:
        tokens.record(input_tokens, {**attrs, "gen_ai.token.type": "input"})
    if output_tokens is not None:
        tokens.record(output_tokens, {**attrs, "gen_ai.token.type": "output"})


class ChatSpanMetrics(SpanProcessor):
    """Span processor deriving the GenAI client histograms from finished ``chat``
    (CLIENT) spans, until the LLM client reports calls itself (:func:`record_llm_call`).

    Args:
        meter_provider: Where to record (the one ``setup()`` installed).
    """

    def __init__(self, meter_provider: MeterProvider) -> None:
        self._mp = meter_provider

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if _hook_used[0]:
            return
        attrs = span.attributes
        if not attrs:
            return
        op = attrs.get("gen_ai.operation.name")
        if op not in CLIENT_OPERATIONS:
            return
        start, end = span.start_time or 0, span.end_time or 0
        error = attrs.get("error.type")
        if error is None and not span.status.is_ok:
            error = "_OTHER"

        def opt_int(key: str) -> int | None:
            v = attrs.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        port = opt_int("server.port")
        self._safe_record(
            str(op),
            str(attrs.get("gen_ai.provider.name") or attrs.get("llm.provider") or "_OTHER"),
            str(attrs.get("gen_ai.request.model") or ""),
            _opt_str(attrs.get("gen_ai.response.model")),
            (end - start) / 1e9,
            opt_int("gen_ai.usage.input_tokens"),
            opt_int("gen_ai.usage.output_tokens"),
            _opt_str(error),
            _opt_str(attrs.get("server.address")),
            port,
        )

    def _safe_record(self, *args: Any) -> None:
        try:
            _record(self._mp, *args)
        except Exception:  # a metrics failure must never break a span's end
            log.debug("cannot record GenAI metrics", exc_info=True)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


# -- the bus ----------------------------------------------------------------------------

_runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()
_bus_providers: weakref.WeakSet[Any] = weakref.WeakSet()


def observe_bus(runtime: Runtime, meter_provider: MeterProvider | None = None) -> None:
    """Reports ``runtime``'s bus counters on the meter provider (default: the global
    one) from now on, for as long as ``runtime`` exists."""
    from opentelemetry import metrics

    _runtimes.add(runtime)
    mp = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _lock:
        if mp in _bus_providers:
            return
        _bus_providers.add(mp)
    from loom import __version__

    meter = mp.get_meter("loom", __version__)
    meter.create_observable_counter(
        "loom.bus.published",
        callbacks=[_published],
        unit="{event}",
        description="Events published on the bus.",
    )
    meter.create_observable_counter(
        "loom.bus.delivered",
        callbacks=[_delivered],
        unit="{event}",
        description="Events enqueued for subscribers (one per subscriber).",
    )
    meter.create_observable_counter(
        "loom.bus.dropped",
        callbacks=[_dropped],
        unit="{event}",
        description="Events dropped (full realtime/background queues, give-ups).",
    )
    meter.create_observable_gauge(
        "loom.bus.queue.depth",
        callbacks=[_depth],
        unit="{event}",
        description="Events queued and not yet taken, per subscription pattern.",
    )


def _stats() -> list[dict[str, Any]]:
    out = []
    for rt in list(_runtimes):
        try:
            out.append(rt.bus.core.stats())
        except Exception:  # a bus being torn down: skip it this round
            continue
    return out


def _published(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    stats = _stats()
    if stats:
        yield Observation(sum(int(s["published"]) for s in stats))


def _topic_sum(key: str) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    stats = _stats()
    if stats:
        yield Observation(sum(int(t[key]) for s in stats for t in s["topics"]))


def _delivered(options: CallbackOptions) -> Iterable[Observation]:
    return _topic_sum("delivered")


def _dropped(options: CallbackOptions) -> Iterable[Observation]:
    return _topic_sum("dropped")


def _depth(options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    depth: dict[tuple[str, str], int] = {}
    for s in _stats():
        for sub in s["subscriptions"]:
            key = (str(sub["pattern"]), str(sub["qos"]))
            depth[key] = depth.get(key, 0) + int(sub["depth"])
    for (pattern, qos), n in depth.items():
        yield Observation(
            n, {"messaging.destination.subscription.name": pattern, "loom.bus.qos": qos}
        )


__all__ = [
    "CLIENT_OPERATIONS",
    "DURATION_BUCKETS",
    "TOKEN_BUCKETS",
    "ChatSpanMetrics",
    "observe_bus",
    "record_llm_call",
]

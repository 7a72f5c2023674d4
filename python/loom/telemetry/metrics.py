"""Metrics: GenAI client operation duration and token usage, and the bus counters.

Instruments come from the run's meter provider (the one :func:`loom.telemetry.setup`
installed), else from OpenTelemetry's global one; nothing is recorded until one of them
is real.

LLM calls: the LLM client reports each finished call with :func:`record_llm_call`, the
one source of the two GenAI histograms (so unsampled calls are counted too). Each
distinct set of its attribute arguments is bound once
(:class:`~loom.telemetry.bound_metrics.BoundHistogram`): the SDK's data points and
exemplars, without its per-record attribute validation and hashing.

Bus: :func:`observe_bus` registers observable instruments that read
``host.bus.stats()`` at each collection: ``loom.bus.published``,
``loom.bus.delivered``, ``loom.bus.dropped`` (counters, events since the bus was
created) and ``loom.bus.queue.depth`` (gauge, per subscription pattern and QoS).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from loom._version import __version__
from loom.telemetry.state import _process

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

    from loom.telemetry.bound_metrics import BoundCall

#: Bucket boundaries the GenAI conventions advise for the two client histograms.
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

#: ``gen_ai.operation.name`` values of client calls that the histograms cover.
CLIENT_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})

#: Distinct attribute sets bound per meter provider; more go through the SDK's
#: public path (the SDK's own cardinality limit is 2000 per instrument).
MAX_BOUND = 1000

_lock = threading.Lock()


class _GenAI:
    """The two GenAI histograms of one meter provider, and their bound records."""

    __slots__ = ("bound", "duration", "tokens")

    def __init__(self, duration: Histogram, tokens: Histogram) -> None:
        self.duration = duration
        self.tokens = tokens
        #: By :func:`record_llm_call`'s attribute arguments.
        self.bound: dict[tuple[Any, ...], BoundCall] = {}

    def recorders(self, key: tuple[Any, ...]) -> BoundCall:
        from loom.telemetry.bound_metrics import BoundCall, BoundHistogram

        operation, provider, request_model, response_model, address, port, error = key
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": request_model,
        }
        if response_model:
            attrs["gen_ai.response.model"] = response_model
        if address:
            attrs["server.address"] = address
        if port is not None:
            attrs["server.port"] = port
        if error:
            attrs["error.type"] = error
        made = BoundCall(
            BoundHistogram(self.duration, attrs),
            BoundHistogram(self.tokens, {**attrs, "gen_ai.token.type": "input"}),
            BoundHistogram(self.tokens, {**attrs, "gen_ai.token.type": "output"}),
        )
        if len(self.bound) < MAX_BOUND:
            self.bound[key] = made
        return made


# Instruments made per meter provider (providers come and go with runs and tests).
_genai: weakref.WeakKeyDictionary[Any, _GenAI] = weakref.WeakKeyDictionary()


def current_meter_provider() -> MeterProvider:
    """The run's meter provider (:func:`loom.telemetry.setup`), else the global one."""
    provider = _process.meter_provider
    if provider is not None:
        result: MeterProvider = provider
        return result
    from opentelemetry import metrics

    return metrics.get_meter_provider()


def _instruments(mp: MeterProvider) -> _GenAI:
    entry = _genai.get(mp)
    if entry is None:
        with _lock:
            entry = _genai.get(mp)
            if entry is None:
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
                entry = _genai[mp] = _GenAI(duration, tokens)
    return entry


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
    ``gen_ai.client.token.usage`` (call it once per call, retries included, before
    ending the call's span).

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
    genai = _instruments(current_meter_provider())
    # One attribute set per combination, bound once (loom.telemetry.bound_metrics).
    key = (
        operation,
        provider,
        request_model,
        response_model,
        server_address,
        server_port,
        error_type,
    )
    recorders = genai.bound.get(key)
    if recorders is None:
        recorders = genai.recorders(key)
    # One clock read and current-span lookup for the call's records.
    recorders.record(
        max(0.0, duration_s),
        None if error_type else input_tokens,  # the conventions record token usage of
        None if error_type else output_tokens,  # successful calls only
    )


# -- the bus ----------------------------------------------------------------------------


class _TopicCounters(Protocol):
    @property
    def delivered(self) -> int: ...
    @property
    def dropped(self) -> int: ...


class _SubscriptionDepth(Protocol):
    @property
    def pattern(self) -> str: ...
    @property
    def qos(self) -> str: ...
    @property
    def depth(self) -> int: ...


class _BusSnapshot(Protocol):
    @property
    def published(self) -> int: ...
    @property
    def topics(self) -> Mapping[str, _TopicCounters]: ...
    @property
    def subscriptions(self) -> Sequence[_SubscriptionDepth]: ...


class _Bus(Protocol):
    def stats(self) -> _BusSnapshot: ...


class BusHost(Protocol):
    """What :func:`observe_bus` reads: something with a bus (a ``Runtime``)."""

    @property
    def bus(self) -> _Bus: ...


class _BusObserver:
    """The bus instruments of one meter provider, and the hosts they report."""

    def __init__(self, mp: MeterProvider) -> None:
        self.hosts: weakref.WeakSet[Any] = weakref.WeakSet()
        meter = mp.get_meter("loom", __version__)
        meter.create_observable_counter(
            "loom.bus.published",
            callbacks=[self._published],
            unit="{event}",
            description="Events published on the bus.",
        )
        meter.create_observable_counter(
            "loom.bus.delivered",
            callbacks=[self._delivered],
            unit="{event}",
            description="Events enqueued for subscribers (one per subscriber).",
        )
        meter.create_observable_counter(
            "loom.bus.dropped",
            callbacks=[self._dropped],
            unit="{event}",
            description="Events dropped (full realtime/background queues, give-ups).",
        )
        meter.create_observable_gauge(
            "loom.bus.queue.depth",
            callbacks=[self._depth],
            unit="{event}",
            description="Events queued and not yet taken, per subscription pattern.",
        )

    def _stats(self) -> list[_BusSnapshot]:
        out = []
        for host in list(self.hosts):
            try:
                out.append(host.bus.stats())
            except Exception:  # a bus being torn down: skip it this round
                continue
        return out

    def _published(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        stats = self._stats()
        if stats:
            yield Observation(sum(s.published for s in stats))

    def _delivered(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        stats = self._stats()
        if stats:
            yield Observation(sum(t.delivered for s in stats for t in s.topics.values()))

    def _dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        stats = self._stats()
        if stats:
            yield Observation(sum(t.dropped for s in stats for t in s.topics.values()))

    def _depth(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        depth: dict[tuple[str, str], int] = {}
        for s in self._stats():
            for sub in s.subscriptions:
                key = (str(sub.pattern), str(sub.qos))
                depth[key] = depth.get(key, 0) + int(sub.depth)
        for (pattern, qos), n in depth.items():
            yield Observation(
                n, {"messaging.destination.subscription.name": pattern, "loom.bus.qos": qos}
            )


# One observer per meter provider: its instruments may be registered only once.
_observers: weakref.WeakKeyDictionary[Any, _BusObserver] = weakref.WeakKeyDictionary()


def observe_bus(host: BusHost, meter_provider: MeterProvider | None = None) -> None:
    """Reports ``host``'s bus counters on the meter provider (default: the run's, else
    the global one) from now on, for as long as ``host`` exists."""
    mp = meter_provider if meter_provider is not None else current_meter_provider()
    with _lock:
        observer = _observers.get(mp)
        if observer is None:
            observer = _observers[mp] = _BusObserver(mp)
        observer.hosts.add(host)


__all__ = [
    "CLIENT_OPERATIONS",
    "DURATION_BUCKETS",
    "TOKEN_BUCKETS",
    "BusHost",
    "current_meter_provider",
    "observe_bus",
    "record_llm_call",
]

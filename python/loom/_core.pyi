"""Type stubs for ``loom._core``, the Rust extension module (bus, tools, sandbox, span
export)."""

from collections.abc import Generator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Final, final

__version__: Final[str]
#: Most levels of nested lists/dicts (tuples count as lists) a value passed to the core
#: may have, both ways; deeper tool arguments are ``ToolArgumentsInvalid``.
MAX_JSON_DEPTH: Final[int]
__all__ = [
    "MAX_JSON_DEPTH",
    "Bus",
    "Done",
    "Envelope",
    "NativeTools",
    "PendingPublish",
    "SpanExporter",
    "Subscription",
    "ToolCall",
    "__version__",
    "topic_matches",
    "validate_pattern",
    "validate_topic",
]

# -- bus ---------------------------------------------------------------------------

@final
class Envelope:
    """An event on the bus (read-only)."""

    def __new__(
        cls,
        topic: str,
        type: str = "event",
        payload: Any = None,
        *,
        source: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        thread_id: str | None = None,
        ttl: int = 32,
        headers: dict[str, str] | None = None,
        id: str | None = None,
        timestamp_ns: int | None = None,
    ) -> Envelope: ...
    @property
    def id(self) -> str: ...
    @property
    def delivery_count(self) -> int:
        """How many times this event has been delivered (1 the first time; more when a
        reliable subscription over JetStream redelivers it)."""
    @property
    def topic(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def payload(self) -> Any: ...
    @property
    def timestamp(self) -> float:
        """Seconds since the Unix epoch."""
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def source(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def thread_id(self) -> str | None: ...
    @property
    def ttl(self) -> int: ...
    @property
    def headers(self) -> dict[str, str]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class PendingPublish:
    """A publish that found ``reliable`` subscribers full."""

    def retry(self) -> bool: ...
    def arm(self, event_loop: Any, fut: Any) -> bool: ...
    def give_up(self, timeout: float) -> BaseException: ...
    @property
    def event_id(self) -> str: ...

@final
class Done:
    """An awaitable that is already finished: ``await`` gives ``None`` at once."""

    def __init__(self) -> None: ...
    def __await__(self) -> Generator[Any]: ...
    def __iter__(self) -> Done: ...
    def __next__(self) -> None: ...
    def send(self, _value: Any = None) -> None: ...
    def throw(self, typ: Any, val: Any = None, _tb: Any = None) -> None: ...
    def close(self) -> None: ...

@final
class Subscription:
    """One subscriber's queue."""

    def take(self, max: int = 256) -> list[Envelope]: ...
    def arm(self, event_loop: Any, fut: Any) -> bool: ...
    def unsubscribe(self) -> bool: ...
    def stats(self) -> dict[str, Any]: ...
    @property
    def id(self) -> int: ...
    @property
    def pattern(self) -> str: ...
    @property
    def qos(self) -> str: ...
    @property
    def group(self) -> str | None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def depth(self) -> int: ...
    @property
    def closed(self) -> bool: ...

@final
class Bus:
    """The in-process event bus."""

    def __new__(cls) -> Bus: ...
    def subscribe(
        self,
        pattern: str,
        qos: str = "realtime",
        capacity: int | None = None,
        group: str | None = None,
    ) -> Subscription: ...
    def publish(
        self,
        topic: str,
        type: str = "event",
        payload: Any = None,
        source: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        thread_id: str | None = None,
        ttl: int = 32,
        headers: dict[str, str] | None = None,
        *,
        to_group: str | None = None,
    ) -> PendingPublish | None: ...
    def observe(self, pattern: str, capacity: int = 512) -> Subscription:
        """A ``background`` queue seeing every matching event, left out of the topics'
        delivered/dropped/subscriber totals (tools that watch the bus)."""
    def unsubscribe(self, id: int) -> bool: ...
    def set_remote_groups(self, on: bool) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def subscription_count(self) -> int: ...
    def stats(self) -> dict[str, Any]: ...

def validate_topic(topic: str) -> None: ...
def validate_pattern(pattern: str) -> None: ...
def topic_matches(pattern: str, topic: str) -> bool: ...

# -- tools (native fs/shell tools and their sandbox) ----------------------------------

@final
class ToolCall:
    """A call started by :meth:`NativeTools.call`."""

    def cancel(self) -> None:
        """Stops the call; its processes are killed within ~50 ms."""
    @property
    def cancelled(self) -> bool: ...

@final
class NativeTools:
    """The native tools (``fs:*``, ``system:shell``), confined to one workspace.

    ``config_json`` is the JSON form of ``[workspace]``, ``[sandbox]`` and ``[tools]``
    from ``loom.toml`` (see ``docs/tools.md``). Raises ``loom.errors.ConfigError`` (with
    ``key``) for an invalid configuration.

    A call resolves to ``(result, error, spans_json)``: the tool's result or
    ``None`` (as Python objects); a ``loom.errors.ToolError`` instance (``ToolNotFound``,
    ``ToolArgumentsInvalid``, ``ToolDenied``, ``ToolTimeout``, ``ToolFailed``) or
    ``None``; and the sandbox's spans as a JSON list of
    ``{name, start_unix_nanos, end_unix_nanos, attributes, status_error, parent}``.
    """

    def __new__(cls, config_json: str) -> NativeTools: ...
    def specs(self) -> list[dict[str, Any]]:
        """``[{"name", "description", "parameters"}]`` sorted by name."""
    def status(self) -> dict[str, Any]:
        """What the sandbox enforces here (Landlock level, seccomp, pid namespace, ...)."""
    @property
    def workspace(self) -> str: ...
    def call(
        self,
        name: str,
        args: str | dict[str, Any],
        timeout: float | None,
        loop: Any,
        future: Any,
    ) -> ToolCall:
        """Runs on a process-wide worker thread (no GIL); resolves ``future`` on the
        loop's thread through the loop's completion port (an eventfd watched with
        ``loop.add_reader``; the worker never takes the GIL), or via
        ``loop.call_soon_threadsafe`` when ``loop`` is not this thread's running loop.

        ``args`` is a JSON object, as text or as a dict, nested at most
        :data:`MAX_JSON_DEPTH` levels (deeper is ``ToolArgumentsInvalid``).
        """
    def call_sync(
        self, name: str, args: str | dict[str, Any], timeout: float | None = None
    ) -> tuple[Any, Exception | None, str]:
        """Runs on the calling thread with the GIL released."""
    def close(self) -> None:
        """Stops accepting calls; running calls finish or time out."""

# -- span export (the run's OTLP/JSON trace file, written by a Rust thread) ------------

@final
class SpanExporter:
    """A bounded span queue and the thread that appends it, one OTLP/JSON
    ``ExportTraceServiceRequest`` line per batch, to ``path`` (created with its
    directory on the first batch). The thread never takes the GIL; see
    ``loom.telemetry.native_export``."""

    def __new__(
        cls,
        path: str | PathLike[str],
        *,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay_millis: float = 5000.0,
    ) -> SpanExporter: ...
    @property
    def path(self) -> Path:
        """The file written to."""
    def add_resource(self, attributes: Mapping[str, Any], schema_url: str | None = None) -> int:
        """Registers a resource; returns its index for :meth:`push`."""
    def add_scope(
        self,
        name: str,
        version: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        schema_url: str | None = None,
    ) -> int:
        """Registers an instrumentation scope; returns its index for :meth:`push`."""
    def push(
        self,
        trace_id: int,
        span_id: int,
        trace_state: str | None,
        parent_span_id: int | None,
        parent_is_remote: bool,
        name: str,
        kind: int,
        start_time: int | None,
        end_time: int | None,
        attributes: Mapping[str, Any],
        dropped_attributes: int,
        events: Sequence[tuple[int, str, Mapping[str, Any] | None, int]] | None,
        dropped_events: int,
        links: Sequence[tuple[int, int, str | None, Mapping[str, Any] | None, int, bool]] | None,
        dropped_links: int,
        status_code: int,
        status_message: str | None,
        resource: int,
        scope: int | None,
    ) -> int:
        """Queues a finished span (``kind`` and ``status_code`` are OTLP's numbers).
        Returns 0 (queued), 1 (queued; the oldest queued span was dropped, the queue
        being full) or 2 (refused: shut down)."""
    def push_plain(
        self,
        context: tuple[Any, ...],
        trace_state: str | None,
        parent: tuple[Any, ...] | None,
        name: str,
        kind: int,
        start_time: int | None,
        end_time: int | None,
        attributes: Mapping[str, Any],
        dropped_attributes: int,
        resource: int,
        scope: int | None,
    ) -> int:
        """:meth:`push` for a span with no events, links or status: ``context`` and
        ``parent`` (None: a root span) are ``SpanContext`` tuples ``(trace_id, span_id,
        is_remote, ...)``, their ids read from them. Same return values."""
    def flush(self, timeout_millis: float = 30000.0) -> bool:
        """Waits (GIL released) until every span pushed so far is written; False on
        timeout."""
    def shutdown(self, timeout_millis: float = 30000.0) -> bool:
        """Writes what is queued, stops the thread, closes the file; False if the
        thread did not finish in time. Idempotent; later pushes return 2."""
    def stats(self) -> dict[str, int]:
        """``queued``, ``accepted``, ``dropped``, ``exported``, ``failed`` (spans lost
        to write errors)."""

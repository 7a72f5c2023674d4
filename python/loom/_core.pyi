"""Type stubs for ``loom._core``, the Rust extension module (bus, tools, sandbox)."""

from collections.abc import Generator
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

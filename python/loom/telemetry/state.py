"""Tracing state: whether spans are recorded, whether content goes on them, the tracer.

A :class:`Telemetry` belongs to a runtime (``runtime.telemetry``), which hands it down:
agent contexts and their subscription runners read ``telemetry.active`` on every emit
and every handled event (a plain attribute, as cheap as a module flag), the tool
registry reads it per call, and the span helpers of this package take the object for
its tracer and its capture switch.

What stays process-wide mirrors what OpenTelemetry and the environment make
process-wide, and lives in this module only (:data:`_process`):

- **the tracer provider.** Loom's spans come from the provider
  :func:`loom.telemetry.setup` installed while it is installed, else from
  OpenTelemetry's global one (``trace.get_tracer_provider()``), unless a
  :class:`Telemetry` was given a provider of its own. ``active`` follows that provider;
  it is refreshed when a :class:`Telemetry` is created (so when a runtime is), when
  Loom installs or uninstalls a provider, and by :func:`refresh_tracing_active`, which
  refreshes every live :class:`Telemetry` (call it after installing a provider
  yourself).
- **the default content switch**: :func:`set_capture_content` (``[telemetry]
  capture_content`` goes through it), else
  ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``. A runtime's own
  ``Telemetry.capture`` overrides it.
- :data:`DEFAULT`: the :class:`Telemetry` of code that runs outside any runtime (an LLM
  client made without an agent, a pattern run from a script).
- the handle ``init_telemetry()`` installed, for ``shutdown_telemetry()`` (both
  process-wide by the original Loom's design).

OpenTelemetry itself is imported on the first refresh, not with ``loom``.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

from loom._version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

    from loom.telemetry.fast_spans import FastTracer

#: The environment variable of the GenAI conventions that switches content capture on.
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

_TRUE = frozenset({"1", "true", "yes", "on"})

#: Provider types that record nothing (the API's defaults, and Loom's global switch
#: while nothing is installed behind it).
_NON_RECORDING = frozenset({"ProxyTracerProvider", "NoOpTracerProvider", "GlobalSwitch"})


class EnvVar:
    """One environment variable, read as ``os.environ.get(name)`` reads it, for a check
    made several times per request.

    Why: ``os.environ.get`` of an unset variable encodes the key and raises and catches
    a ``KeyError`` inside ``Mapping.get`` (~1 µs). This looks the encoded key up in the
    mapping's own storage (``os.environ._data``, which every change made through
    ``os.environ`` updates), so a variable set or unset at run time is seen at once, as
    before. Where that storage is not the one known (another Python, ``os.environ``
    replaced), ``os.environ.get`` is used.
    """

    __slots__ = ("_data", "_decode", "_env", "_key", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        env = os.environ
        self._env: object = env
        data = getattr(env, "_data", None)
        encode = getattr(env, "encodekey", None)
        decode = getattr(env, "decodevalue", None)
        self._data: dict[Any, Any] | None = None
        self._key: Any = None
        self._decode: Any = decode
        if type(data) is dict and callable(encode) and callable(decode):
            try:
                self._key = encode(name)
            except Exception:  # pragma: no cover - a key this platform cannot encode
                return
            self._data = data

    @property
    def direct(self) -> bool:
        """Whether reads go to the mapping's storage (the fast path)."""
        return self._data is not None and os.environ is self._env

    def get(self) -> str | None:
        """The variable's value, or None if it is not set."""
        data = self._data
        if data is None or os.environ is not self._env:
            return os.environ.get(self.name)
        raw = data.get(self._key)
        if raw is None:
            return None
        value: str = self._decode(raw)
        return value


class _Process:
    """The process-wide part of the state (see the module docstring)."""

    __slots__ = (
        "bus_spans",
        "capture",
        "capture_env",
        "followers",
        "init_handle",
        "meter_provider",
        "propagator_mode",
        "tracer_provider",
    )

    def __init__(self) -> None:
        #: :func:`set_capture_content`'s value; None: follow the environment.
        self.capture: bool | None = None
        #: :data:`CAPTURE_ENV`, read on every check (it may change at run time).
        self.capture_env = EnvVar(CAPTURE_ENV)
        #: :func:`set_bus_spans`'s value (``[telemetry] bus_spans``).
        self.bus_spans: str = "all"
        #: The SDK providers :func:`loom.telemetry.setup` installed (None: none is).
        self.tracer_provider: Any = None
        self.meter_provider: Any = None
        #: Every live Telemetry that follows the process's provider.
        self.followers: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        #: The handle :func:`loom.telemetry.setup.init_telemetry` installed (the
        #: original Loom's process-wide entry point), until ``shutdown_telemetry()``.
        self.init_handle: Any = None
        #: The global propagator and what :mod:`loom.telemetry.propagation` found it to
        #: be (re-checked when another one is installed).
        self.propagator_mode: tuple[object, bool | None] | None = None


_process = _Process()


def current_tracer_provider() -> TracerProvider:
    """The provider Loom's spans come from when no runtime chose one: the one
    :func:`loom.telemetry.setup` installed, else OpenTelemetry's global provider."""
    provider = _process.tracer_provider
    if provider is not None:
        result: TracerProvider = provider
        return result
    from opentelemetry import trace

    return trace.get_tracer_provider()


def is_recording(provider: object) -> bool:
    """Whether ``provider`` is a real (SDK) provider, not one of the no-op defaults."""
    return type(provider).__name__ not in _NON_RECORDING


class Telemetry:
    """One runtime's tracing state (see the module docstring).

    Args:
        tracer_provider: Where this runtime's spans go (default: the process's provider,
            followed as it changes).
        capture: Content capture for this runtime (default None: the process-wide
            switch, :func:`capture_content`).
    """

    __slots__ = ("__weakref__", "_provider", "_tracers", "active", "capture")

    def __init__(
        self, *, tracer_provider: TracerProvider | None = None, capture: bool | None = None
    ) -> None:
        #: Whether spans are recorded: read on every emit and every handled event.
        self.active = False
        #: Content capture here; None: the process-wide switch.
        self.capture = capture
        self._provider = tracer_provider
        self._tracers: dict[str, tuple[object, Tracer, FastTracer | None]] = {}
        if tracer_provider is None:
            _process.followers.add(self)
            refresh_tracing_active()
        else:
            self.refresh()

    @classmethod
    def _unrefreshed(cls) -> Telemetry:
        """A follower not refreshed yet (the process default, made at import)."""
        self = cls.__new__(cls)
        self.active = False
        self.capture = None
        self._provider = None
        self._tracers = {}
        _process.followers.add(self)
        return self

    def tracer_provider(self) -> TracerProvider:
        """The provider this runtime's spans come from now."""
        if self._provider is not None:
            return self._provider
        return current_tracer_provider()

    def refresh(self) -> bool:
        """Re-reads whether the provider records; returns :attr:`active`."""
        self.active = is_recording(self.tracer_provider())
        return self.active

    def capture_content(self) -> bool:
        """Whether prompts, completions and tool arguments/results go on spans."""
        if self.capture is not None:
            return self.capture
        return capture_content()

    def tracer(self, scope: str = "loom") -> Tracer:
        """The tracer for instrumentation scope ``scope`` (``loom``; ``loom.llm`` for
        LLM calls), from the current provider: re-fetched when the provider changes,
        unlike a tracer fetched once that would stay pinned to the first one."""
        return self._entry(scope)[1]

    def fast_tracer(self, scope: str = "loom") -> FastTracer | None:
        """:meth:`tracer`'s :class:`~loom.telemetry.fast_spans.FastTracer` (Loom's own
        spans without the SDK tracer's per-span work), or None where the SDK's path
        must be kept (see :func:`loom.telemetry.fast_spans.fast_tracer`)."""
        return self._entry(scope)[2]

    def _entry(self, scope: str) -> tuple[object, Tracer, FastTracer | None]:
        provider = self.tracer_provider()
        entry = self._tracers.get(scope)
        if entry is None or entry[0] is not provider:
            from loom.telemetry.fast_spans import fast_tracer

            tracer = provider.get_tracer(scope, __version__)
            entry = (provider, tracer, fast_tracer(tracer))
            self._tracers[scope] = entry
        return entry

    def __repr__(self) -> str:
        return f"Telemetry(active={self.active}, capture={self.capture_content()})"


#: The Telemetry of code outside any runtime; follows the process's provider.
DEFAULT = Telemetry._unrefreshed()


def telemetry_of(holder: object) -> Telemetry:
    """``holder.telemetry`` (an agent context, a runtime) if it has one, else
    :data:`DEFAULT`."""
    found = getattr(holder, "telemetry", None)
    return found if isinstance(found, Telemetry) else DEFAULT


# -- the process-wide functions (``loom.telemetry``'s public API) ------------------------


def tracing_active() -> bool:
    """Whether a recording (SDK) tracer provider is installed for the process (as of the
    last refresh)."""
    return DEFAULT.active


def refresh_tracing_active() -> bool:
    """Re-reads the process's tracer provider, for every runtime that follows it (call
    after installing one yourself). Returns :func:`tracing_active`."""
    active = is_recording(current_tracer_provider())
    for t in list(_process.followers):
        t.active = active
    return active


def capture_content() -> bool:
    """Whether prompts, completions and tool arguments/results go on spans, for runtimes
    that do not decide it themselves.

    Off unless :func:`set_capture_content` (``[telemetry] capture_content = true``)
    or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` says so.
    """
    if _process.capture is not None:
        return _process.capture
    value = _process.capture_env.get()
    return value is not None and value.strip().lower() in _TRUE


def set_capture_content(enabled: bool | None) -> None:
    """Forces content capture on or off (``None``: follow the environment)."""
    _process.capture = enabled


def bus_spans() -> str:
    """Which spans the bus makes: ``"all"`` (a ``send`` span per publish and an
    ``invoke_agent`` span per handled event, the default), ``"requests"`` (``send``
    spans only for events that ask for a reply) or ``"none"`` (neither; the trace
    context still travels with every event, so a handler's spans stay in the sender's
    trace)."""
    return _process.bus_spans


def set_bus_spans(level: str) -> None:
    """Sets :func:`bus_spans` (``[telemetry] bus_spans`` goes through it).

    Raises:
        ValueError: not one of ``"all"``, ``"requests"``, ``"none"``.
    """
    if level not in ("all", "requests", "none"):
        raise ValueError(f'bus_spans must be one of "all", "requests", "none" (got {level!r})')
    _process.bus_spans = level


def capture_setting() -> bool | None:
    """What :func:`set_capture_content` last set (None: the environment decides)."""
    return _process.capture


__all__ = [
    "CAPTURE_ENV",
    "DEFAULT",
    "EnvVar",
    "Telemetry",
    "bus_spans",
    "capture_content",
    "capture_setting",
    "current_tracer_provider",
    "is_recording",
    "refresh_tracing_active",
    "set_bus_spans",
    "set_capture_content",
    "telemetry_of",
    "tracing_active",
]

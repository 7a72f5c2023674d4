"""Installing and uninstalling the providers of one run, with OpenTelemetry's public API.

OpenTelemetry lets a process set its global tracer provider once
(``trace.set_tracer_provider``), while Loom installs a provider per run (``loom run``
in-process, tests, notebooks) and removes it when the run ends. So Loom keeps the run's
providers itself (:mod:`loom.telemetry.state`: its spans and instruments use them
directly), and the first time it installs one, puts :class:`GlobalSwitch` in
OpenTelemetry's global slot: a provider whose tracers forward to whatever run is
installed now, and record nothing in between. Code that takes its tracer from the
global provider (``trace.get_tracer(...)``, other instrumentations) so joins the run's
trace, and a tracer fetched before the run keeps working for the next one.

If the application installed a provider of its own first, the slot stays its: the
other libraries' spans go there, Loom's to the run's exporters.

Meter providers cannot be swapped this way (instruments are bound to the provider that
made them), so a run's meter provider is used by Loom's own instruments only
(:mod:`loom.telemetry.metrics`); OpenTelemetry's global meter provider is left alone.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Span, Tracer, TracerProvider
from opentelemetry.util import types

from loom.telemetry.state import _process, refresh_tracing_active

log = logging.getLogger("loom.telemetry")

_NOOP = NoOpTracer()


class GlobalSwitch(TracerProvider):
    """Loom's provider in OpenTelemetry's global slot: forwards to the run's provider
    (:func:`install`), no-op while none is installed."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> Tracer:
        return _SwitchTracer(
            (instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        )


class _SwitchTracer(Tracer):
    """A tracer of the installed run's provider, re-fetched when the run changes."""

    def __init__(self, args: tuple[str, str | None, str | None, types.Attributes]) -> None:
        self._args = args
        self._cache: tuple[object, Tracer] = (None, _NOOP)

    def _tracer(self) -> Tracer:
        provider = _process.tracer_provider
        if provider is None:
            return _NOOP
        if self._cache[0] is not provider:
            self._cache = (provider, provider.get_tracer(*self._args))
        return self._cache[1]

    def start_span(self, *args: Any, **kwargs: Any) -> Span:
        return self._tracer().start_span(*args, **kwargs)

    def start_as_current_span(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> AbstractContextManager[Span]:
        cm: AbstractContextManager[Span] = self._tracer().start_as_current_span(*args, **kwargs)
        return cm


_SWITCH = GlobalSwitch()


class Installed:
    """What :func:`install` replaced, for :func:`uninstall`."""

    __slots__ = ("meter_provider", "previous", "tracer_provider")

    def __init__(self, tracer_provider: Any, meter_provider: Any, previous: tuple[Any, Any]):
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.previous = previous


def install(tracer_provider: Any, meter_provider: Any | None) -> Installed:
    """Makes ``tracer_provider`` (and ``meter_provider``, if any) the run's: Loom's
    spans and instruments use them, and so does every tracer of the global provider
    once :class:`GlobalSwitch` holds the global slot."""
    token = Installed(
        tracer_provider,
        meter_provider,
        (_process.tracer_provider, _process.meter_provider),
    )
    _process.tracer_provider = tracer_provider
    if meter_provider is not None:
        _process.meter_provider = meter_provider
    _claim_global_slot()
    refresh_tracing_active()
    return token


def uninstall(token: Installed) -> None:
    """Puts back what :func:`install` replaced (unless another run was installed over
    it meanwhile: then that one stays)."""
    if _process.tracer_provider is token.tracer_provider:
        _process.tracer_provider = token.previous[0]
    if token.meter_provider is not None and _process.meter_provider is token.meter_provider:
        _process.meter_provider = token.previous[1]
    refresh_tracing_active()


def _claim_global_slot() -> None:
    current = trace.get_tracer_provider()
    if current is _SWITCH:
        return
    if type(current).__name__ == "ProxyTracerProvider":  # nothing set yet
        trace.set_tracer_provider(_SWITCH)
        if trace.get_tracer_provider() is _SWITCH:
            return
    log.info(
        "a global tracer provider is installed already (%s): Loom's spans go to the "
        "[telemetry] exporters, other libraries' to that provider",
        type(trace.get_tracer_provider()).__name__,
    )


def global_switch_installed() -> bool:
    """Whether Loom's :class:`GlobalSwitch` holds OpenTelemetry's global slot."""
    return trace.get_tracer_provider() is _SWITCH


__all__ = ["GlobalSwitch", "Installed", "global_switch_installed", "install", "uninstall"]

"""OpenTelemetry for Loom: spans named after the GenAI semantic conventions, metrics,
and the providers a run installs.

Every span and metric helper of Loom lives here, by area: :mod:`~.agent_spans` (the
bus and agents), :mod:`~.tool_spans`, :mod:`~.chat_spans` (LLM calls),
:mod:`~.workflow_spans` (patterns, project runs), :mod:`~.metrics`. They take a
:class:`Telemetry`, the tracing state a runtime owns (``runtime.telemetry``: whether
spans are recorded, content capture, the tracer); :mod:`~.state` documents what stays
process-wide. Exporters are installed by the runtime (``loom run``) or :func:`setup`,
never by library code.
"""

from __future__ import annotations

# SafeFormatter: the log formatter ``loom`` installs (one line per record, control
# characters escaped: log messages carry model-chosen text); use it on your own handlers.
# setup is imported here (not lazily) so that ``loom.telemetry.setup`` is always the
# function, never shadowed by the submodule of the same name; setup.py imports the SDK
# only when called.
from loom._text import SafeFormatter
from loom.telemetry.setup import TelemetryHandle, init_telemetry, setup, shutdown_telemetry
from loom.telemetry.state import (
    Telemetry,
    bus_spans,
    capture_content,
    current_tracer_provider,
    refresh_tracing_active,
    set_bus_spans,
    set_capture_content,
    tracing_active,
)

__all__ = [
    "SafeFormatter",
    "Telemetry",
    "TelemetryHandle",
    "bus_spans",
    "capture_content",
    "current_tracer_provider",
    "init_telemetry",
    "refresh_tracing_active",
    "set_bus_spans",
    "set_capture_content",
    "setup",
    "shutdown_telemetry",
    "tracing_active",
]

"""OpenTelemetry for Loom: spans named after the GenAI semantic conventions.

Library code only uses the global tracer (``opentelemetry.trace.get_tracer``); exporters
are installed by the runtime (``loom run``) or :func:`loom.telemetry.setup`.
"""

from __future__ import annotations

import os

_capture_content: bool | None = None


def capture_content() -> bool:
    """Whether prompts, completions and tool arguments/results go on spans.

    Off unless ``[telemetry] capture_content = true`` or
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
    """
    if _capture_content is not None:
        return _capture_content
    env = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return env.strip().lower() in {"1", "true", "yes", "on"}


def set_capture_content(enabled: bool | None) -> None:
    """Forces content capture on or off (``None``: follow the environment)."""
    global _capture_content
    _capture_content = enabled


# -- is a real tracer provider installed? ---------------------------------------------
# Checked on the hot paths (every emit, every handled event), so it is a plain flag,
# refreshed when Loom installs a provider and when a runtime is created.
_tracing = [False]


def tracing_active() -> bool:
    """Whether a recording (SDK) tracer provider is installed globally."""
    return _tracing[0]


def refresh_tracing_active() -> bool:
    """Re-reads the global tracer provider (call after installing one yourself)."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    name = type(provider).__name__
    _tracing[0] = name not in {"ProxyTracerProvider", "NoOpTracerProvider"}
    return _tracing[0]


# SafeFormatter: the log formatter ``loom`` installs (one line per record, control
# characters escaped: log messages carry model-chosen text); use it on your own handlers.
# setup is imported here (not lazily) so that ``loom.telemetry.setup`` is always the
# function, never shadowed by the submodule of the same name; setup.py imports the SDK
# only when called.
from loom._text import SafeFormatter  # noqa: E402
from loom.telemetry.setup import TelemetryHandle, setup  # noqa: E402

__all__ = [
    "SafeFormatter",
    "TelemetryHandle",
    "capture_content",
    "refresh_tracing_active",
    "set_capture_content",
    "setup",
    "tracing_active",
]

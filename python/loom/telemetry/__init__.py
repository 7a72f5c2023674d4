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


__all__ = ["capture_content", "set_capture_content"]

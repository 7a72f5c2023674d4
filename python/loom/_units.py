"""Time arguments: seconds (``timeout=``) or the original API's milliseconds
(``timeout_ms=``), one rule for every call that takes both."""

from __future__ import annotations

import math


def seconds(timeout: float | None, timeout_ms: float | None, *, what: str) -> float | None:
    """The timeout in seconds from ``timeout`` or ``timeout_ms`` (at most one given).

    Raises:
        TypeError: both are given, or ``timeout_ms`` is not a number.
        ValueError: ``timeout_ms`` is not a positive finite number.
    """
    if timeout_ms is None:
        return timeout
    if timeout is not None:
        raise TypeError(f"{what}: give timeout (seconds) or timeout_ms, not both")
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)):
        raise TypeError(f"{what}: timeout_ms must be a number, not {type(timeout_ms).__name__}")
    if not math.isfinite(timeout_ms) or timeout_ms <= 0:
        raise ValueError(f"{what}: timeout_ms must be a positive number, not {timeout_ms!r}")
    return timeout_ms / 1000.0

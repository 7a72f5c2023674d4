"""When to retry and how long to wait (the policy of openai-python).

Retried: 408, 409, 429, every 5xx, and connection errors/timeouts. A server's
``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date) is honoured, capped at
:data:`MAX_RETRY_AFTER` so that one answer cannot park an agent for an hour; without
one, exponential backoff from 0.5 s doubling to 8 s, minus up to 25 % jitter so that
many agents don't retry in lockstep.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping

from ._constants import INITIAL_RETRY_DELAY, MAX_RETRY_AFTER, MAX_RETRY_DELAY, RETRY_STATUSES


def is_retryable_status(status_code: int) -> bool:
    """408, 409, 429 and every 5xx."""
    return status_code in RETRY_STATUSES or status_code >= 500


def retryable(err: BaseException) -> bool:
    """Whether an error from one attempt is worth another: connection errors and
    timeouts, and status errors with a retryable status (not a reclassified 400)."""
    from .errors import BadRequestError, LLMConnectionError, LLMStatusError

    if isinstance(err, LLMStatusError):
        return not isinstance(err, BadRequestError) and is_retryable_status(err.status_code)
    return isinstance(err, LLMConnectionError)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait (capped), or None (absent, unparsable, negative)."""
    if not headers:
        return None
    value: float | None = None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = None
    if value is None:
        raw = headers.get("retry-after")
        if raw is not None:
            try:
                value = float(raw)
            except ValueError:
                parsed = email.utils.parsedate_tz(raw)
                if parsed is not None:
                    value = email.utils.mktime_tz(parsed) - time.time()
    if value is None or value != value or value < 0:  # absent, NaN or in the past
        return None
    return min(value, MAX_RETRY_AFTER)


def backoff(retries_taken: int, *, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter for the ``retries_taken``-th retry (0-based)."""
    delay = min(INITIAL_RETRY_DELAY * (2.0**retries_taken), MAX_RETRY_DELAY)
    jitter = 1.0 - 0.25 * (rng or random).random()
    return delay * jitter


def retry_delay(retries_taken: int, headers: Mapping[str, str] | None = None) -> float:
    """How long to sleep before the next attempt."""
    server = retry_after(headers)
    if server is not None:
        return server
    return backoff(retries_taken)


__all__ = ["backoff", "is_retryable_status", "retry_after", "retry_delay", "retryable"]

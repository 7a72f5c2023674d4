"""Retry policy: which statuses, how long (Retry-After, backoff, jitter)."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from loom.llm._constants import MAX_RETRY_AFTER, MAX_RETRY_DELAY
from loom.llm.retry import backoff, is_retryable_status, retry_after, retry_delay


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable(status):
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 200])
def test_not_retryable(status):
    assert not is_retryable_status(status)


def test_retry_after_forms():
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "100", "retry-after": "9"}) == 0.1
    date = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.5 <= (retry_after({"retry-after": date}) or 0) <= 5.0
    assert retry_after({"retry-after": "3600"}) == MAX_RETRY_AFTER  # capped
    assert retry_after({"retry-after": "-1"}) is None
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({"retry-after-ms": "nan"}) is None
    assert retry_after({}) is None and retry_after(None) is None


def test_backoff_grows_caps_and_jitters():
    rng = random.Random(1)
    first = [backoff(0, rng=rng) for _ in range(200)]
    assert all(0.375 <= d <= 0.5 for d in first)
    assert len({round(d, 6) for d in first}) > 100  # jittered, not lockstep
    assert all(0.75 <= backoff(1, rng=rng) <= 1.0 for _ in range(50))
    assert all(0.75 * MAX_RETRY_DELAY <= backoff(10, rng=rng) <= MAX_RETRY_DELAY for _ in range(50))


def test_retry_delay_prefers_server():
    assert retry_delay(5, {"retry-after": "1.5"}) == 1.5
    assert retry_delay(0, {}) <= 0.5

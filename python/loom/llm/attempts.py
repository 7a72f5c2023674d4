"""The attempt loop, shared by calls and streams: client-side limits, retries with
backoff, and fallbacks to other providers.

An answer is a stream of events (:mod:`loom.llm.exchange`; a non-streamed call yields
just its usage and finish events), so one loop serves both:

- :func:`with_retries` runs attempts of one provider, each inside a limiter slot (settled
  with the usage of the answer, or the estimate when there is none), and retries a retryable error
  (:func:`loom.llm.retry.retryable`) after a backoff — but only until the first event
  has been passed on: a half-streamed answer cannot be retried without the caller
  seeing text twice.
- :func:`with_fallbacks` moves on to the next provider when one fails before its first
  event with an error another provider might not have (connection, 5xx, 429).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import aclosing

from . import retry
from .errors import LLMConnectionError, LLMError, LLMStatusError, RateLimitError, ServerError
from .errors import redact as _redact
from .limits import Limiter
from .types import FinishEvent, StreamEvent

log = logging.getLogger("loom.llm")

#: Makes one attempt's events.
Attempt = Callable[[], AsyncGenerator[StreamEvent, None]]
#: Called before each retry's sleep: (retry number from 1, delay in s, reason).
OnRetry = Callable[[int, float, str], None]


def fallbackable(exc: LLMError) -> bool:
    """Whether another provider might succeed where this one failed."""
    return isinstance(exc, (LLMConnectionError, ServerError, RateLimitError))


async def with_retries(
    attempt: Attempt,
    *,
    provider: str,
    max_retries: int,
    limiter: Limiter | None,
    estimated_tokens: int,
    secrets: Sequence[str],
    on_retry: OnRetry,
) -> AsyncGenerator[StreamEvent, None]:
    """The events of the first attempt that works, retrying failures before its first
    event up to ``max_retries`` times.

    Args:
        attempt: Makes one attempt.
        provider: For logs.
        max_retries: Retries after the first attempt.
        limiter: The provider's limits, or None.
        estimated_tokens: What one attempt reserves in the limiter's token bucket.
        secrets: Values masked in logged errors.
        on_retry: Told about each retry (the call's span records it).
    """
    retries = 0
    yielded = False
    while True:
        try:
            if limiter is None:
                async with aclosing(attempt()) as events:
                    async for event in events:
                        yielded = True
                        yield event
            else:
                async with limiter.slot(estimated_tokens) as slot, aclosing(attempt()) as events:
                    async for event in events:
                        yielded = True
                        if type(event) is FinishEvent:
                            usage = event.response.usage
                            slot.settle(usage.total_tokens or estimated_tokens)
                        yield event
            return
        except LLMError as err:
            if yielded:
                log.debug("%s: not retrying a stream after its first chunk", provider)
                raise
            if retries >= max_retries or not retry.retryable(err):
                if not retry.retryable(err):
                    log.debug("%s: not retrying %s", provider, type(err).__name__)
                else:
                    log.debug(
                        "%s: giving up after %d retries: %s",
                        provider,
                        retries,
                        _redact(str(err), secrets),
                    )
                raise
            status = err.status_code if isinstance(err, LLMStatusError) else None
            headers = err.headers if isinstance(err, LLMStatusError) else None
            delay = retry.retry_delay(retries, headers)
            log.debug(
                "%s: retrying in %.2fs (retry %d) after %s",
                provider,
                delay,
                retries + 1,
                _redact(str(err), secrets),
            )
            on_retry(retries + 1, delay, str(status) if status is not None else type(err).__name__)
            await asyncio.sleep(delay)
            retries += 1


async def with_fallbacks(
    primary: str, answers: Iterable[tuple[str, Attempt]]
) -> AsyncGenerator[StreamEvent, None]:
    """The events of the first provider in ``answers`` that answers.

    ``answers`` is consumed lazily, so fallbacks are built only when the primary has
    failed (a misconfigured fallback cannot break the primary).
    """
    last: LLMError | None = None
    started = False
    for name, answer in answers:
        if last is not None:
            log.warning("%s failed (%s); falling back to %s", primary, last, name)
        try:
            async with aclosing(answer()) as events:
                async for event in events:
                    started = True
                    yield event
            return
        except LLMError as exc:
            if started or not fallbackable(exc):
                raise
            last = exc
    if last is not None:
        raise last


__all__ = ["Attempt", "OnRetry", "fallbackable", "with_fallbacks", "with_retries"]

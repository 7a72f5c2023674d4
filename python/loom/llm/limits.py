"""Client-side limits shared by every agent of a runtime: requests per minute, tokens
per minute, and requests in flight, per provider.

The buckets reserve first and wait afterwards (a bucket may go negative), which makes
them fair (first come, first served) without a lock, and lets a call whose real token
usage differs from its estimate settle the difference afterwards.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from types import TracebackType


class TokenBucket:
    """A bucket of ``capacity`` units refilled at ``capacity`` per minute."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = float(per_minute)
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def reserve(self, amount: float) -> float:
        """Take ``amount`` now; return the seconds to wait before using it."""
        self._refill()
        self.level -= min(amount, self.capacity)
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def settle(self, delta: float) -> None:
        """Correct an earlier reservation by ``delta`` units (positive: used more)."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class Limiter:
    """RPM/TPM buckets and a concurrency cap for one provider.

    Use as ``async with limiter.slot(estimated_tokens) as slot: ...; slot.settle(real)``.
    """

    def __init__(
        self, rpm: int | None = None, tpm: int | None = None, max_concurrency: int | None = None
    ) -> None:
        self.rpm = TokenBucket(rpm) if rpm else None
        self.tpm = TokenBucket(tpm) if tpm else None
        self.max_concurrency = max_concurrency
        # One semaphore per event loop: asyncio primitives may not cross loops.
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self.in_flight = 0

    def update(self, rpm: int | None, tpm: int | None, max_concurrency: int | None) -> None:
        """Apply the most restrictive of the existing and new settings."""
        if rpm and (self.rpm is None or rpm < self.rpm.capacity):
            self.rpm = TokenBucket(rpm)
        if tpm and (self.tpm is None or tpm < self.tpm.capacity):
            self.tpm = TokenBucket(tpm)
        if max_concurrency and (
            self.max_concurrency is None or max_concurrency < self.max_concurrency
        ):
            self.max_concurrency = max_concurrency
            self._sems = weakref.WeakKeyDictionary()

    def _sem(self) -> asyncio.Semaphore | None:
        if not self.max_concurrency:
            return None
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            sem = self._sems[loop] = asyncio.Semaphore(self.max_concurrency)
        return sem

    def slot(self, tokens: int = 0) -> _Slot:
        """A context manager holding one request's place."""
        return _Slot(self, tokens)


class _Slot:
    __slots__ = ("_limiter", "_sem", "_tokens")

    def __init__(self, limiter: Limiter, tokens: int) -> None:
        self._limiter = limiter
        self._tokens = tokens
        self._sem: asyncio.Semaphore | None = None

    async def __aenter__(self) -> _Slot:
        lim = self._limiter
        wait = 0.0
        if lim.rpm is not None:
            wait = lim.rpm.reserve(1)
        if lim.tpm is not None and self._tokens:
            wait = max(wait, lim.tpm.reserve(self._tokens))
        if wait > 0:
            await asyncio.sleep(wait)
        sem = lim._sem()
        if sem is not None:
            await sem.acquire()
            self._sem = sem
        lim.in_flight += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._limiter.in_flight -= 1
        if self._sem is not None:
            self._sem.release()

    def settle(self, actual_tokens: int) -> None:
        """Report the real token count so the TPM bucket reflects it."""
        if self._limiter.tpm is not None:
            self._limiter.tpm.settle(actual_tokens - self._tokens)


class Limiters:
    """The limiters of one runtime (:class:`~loom.llm.state.LLMState`), one per provider
    name and endpoint, so that every provider object for it shares the same buckets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], Limiter] = {}

    def limiter(
        self,
        provider: str,
        base_url: str,
        *,
        rpm: int | None,
        tpm: int | None,
        max_concurrency: int | None,
    ) -> Limiter | None:
        """The limiter of a provider (the most restrictive settings seen win), or None
        when it has no limits."""
        if not (rpm or tpm or max_concurrency):
            return None
        key = (provider, base_url)
        with self._lock:
            lim = self._by_key.get(key)
            if lim is None:
                lim = self._by_key[key] = Limiter(rpm, tpm, max_concurrency)
            else:
                lim.update(rpm, tpm, max_concurrency)
            return lim

    def clear(self) -> None:
        """Forget every limiter."""
        with self._lock:
            self._by_key.clear()


__all__ = ["Limiter", "Limiters", "TokenBucket"]

"""Running handlers for bus subscriptions: worker tasks with bounded concurrency.

Each subscription gets up to ``concurrency`` long-lived worker tasks that take events
straight from the Rust queue and await the handler inline; a handler that awaits
(``ctx.request``, an LLM call) holds one worker while the others go on. Long-lived
workers avoid creating a task per event, and handlers run inside a real task, so
``asyncio.timeout`` and cancellation inside a handler behave as users expect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from loom._core import Envelope
from loom.bus import Subscription

log = logging.getLogger("loom.agent")

#: Events taken per step by a batch handler.
BATCH_MAX = 256

EventFn = Callable[[Envelope], Awaitable[Any] | Any]
BatchFn = Callable[[list[Envelope]], Awaitable[Any] | Any]


class SubscriptionRunner:
    """Feeds one subscription's events to a handler from a pool of worker tasks."""

    def __init__(
        self,
        owner: str,
        sub: Subscription,
        *,
        on_event: EventFn | None = None,
        on_batch: BatchFn | None = None,
        concurrency: int = 1,
        limiter: asyncio.Semaphore | None = None,
    ) -> None:
        if (on_event is None) == (on_batch is None):
            raise ValueError("give exactly one of on_event and on_batch")
        self.owner = owner
        self.sub = sub
        self._on_event = on_event
        self._on_batch = on_batch
        self._concurrency = 1 if on_batch else max(1, concurrency)
        self._limiter = limiter
        self._ready: asyncio.Future[None] | None = None
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        name = f"loom:{self.owner}:{self.sub.pattern}"
        worker = self._batch_worker if self._on_batch else self._event_worker
        self._workers = [
            loop.create_task(worker(), name=f"{name}#{i}") for i in range(self._concurrency)
        ]

    async def _readable(self) -> bool:
        """Waits for events; shared by the idle workers. False when closed and drained."""
        sub = self.sub._sub
        while True:
            fut = self._ready
            if fut is None or fut.done():
                loop = asyncio.get_running_loop()
                fut = self._ready = loop.create_future()
                if not sub.arm(loop, fut):
                    self._ready = None
                    return not (sub.closed and sub.depth == 0)
            await asyncio.shield(fut)
            return True

    async def _event_worker(self) -> None:
        take = self.sub._sub.take
        # One worker may take a batch; several take one event each so that a slow
        # handler never sits on events another worker could run.
        n = BATCH_MAX if self._concurrency == 1 else 1
        handle = self._handle
        while True:
            events = take(n)
            if not events:
                if not await self._readable():
                    return
                continue
            for event in events:
                await handle(event)

    async def _handle(self, event: Envelope) -> None:
        assert self._on_event is not None
        try:
            if self._limiter is None:
                result = self._on_event(event)
                if asyncio.iscoroutine(result):
                    await result
            else:
                async with self._limiter:
                    result = self._on_event(event)
                    if asyncio.iscoroutine(result):
                        await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "agent %s: handler failed on event %s (topic %s, type %s)",
                self.owner,
                event.id,
                event.topic,
                event.type,
            )

    async def _batch_worker(self) -> None:
        assert self._on_batch is not None
        take = self.sub._sub.take
        while True:
            events = take(BATCH_MAX)
            if not events:
                if not await self._readable():
                    return
                continue
            try:
                result = self._on_batch(events)
                if asyncio.iscoroutine(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "agent %s: batch handler failed on %d events (first %s, topic %s)",
                    self.owner,
                    len(events),
                    events[0].id,
                    events[0].topic,
                )

    async def stop(self, timeout: float | None) -> bool:
        """Stops intake, lets the workers finish queued and in-flight events for up to
        ``timeout`` seconds, then cancels them. Returns True if they finished."""
        self.sub.unsubscribe()
        if not self._workers:
            return True
        done, pending = await asyncio.wait(self._workers, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        self._workers = []
        return not pending

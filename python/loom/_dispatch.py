"""Running handlers for bus subscriptions: worker tasks with bounded concurrency.

Each subscription gets up to ``concurrency`` long-lived worker tasks that take events
straight from the Rust queue and await the handler inside the worker's own task, so
``asyncio.timeout`` and cancellation inside a handler behave as users expect, and no
task is created per event.

Only one idle worker (the *leader*) waits on the Rust queue; the others wait on their
own futures. When the leader goes to work it wakes one follower to take over the
watch, and a worker that leaves events behind in the shared deque wakes one helper —
at most one woken worker is on its way at any time, so a burst costs one task switch
per worker brought in, not one per event, and an event never wakes more than two tasks.
A subscription with one worker (``max_concurrency=1``, or in order) takes its batches
without that shared deque.

A worker keeps its slot of the agent's limiter from one handler to the next while
nobody waits for a slot, and gives it back before it waits for events: nothing runs
between two handlers of one worker, so that is the same limit, without the bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any

from loom._aio import is_awaitable, resolve
from loom._core import Envelope
from loom.bus import Subscription
from loom.telemetry.state import DEFAULT, Telemetry

log = logging.getLogger("loom.agent")

_CoroutineType = CoroutineType

#: Events taken per step by a batch handler or a single-worker subscription.
BATCH_MAX = 256

#: ``handler(ctx, topic, event)``
EventFn = Callable[[Any, str, Envelope], Awaitable[Any] | Any]
#: ``handler(ctx, pattern, events)``
BatchFn = Callable[[Any, str, list[Envelope]], Awaitable[Any] | Any]


class Limiter:
    """A semaphore with a synchronous fast path (the common, uncontended case)."""

    __slots__ = ("free", "waiters")

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        while self.free <= 0:
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            await fut
        self.free -= 1

    def release(self) -> None:
        self.free += 1
        self.wake_one()

    def wake_one(self) -> None:
        """Resolves the first waiter still waiting (after ``free`` went up)."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return


def _release(lim: Limiter | None) -> bool:
    """Gives a kept slot back to ``lim`` (waking a waiter); ``False``: none is held."""
    assert lim is not None
    lim.release()
    return False


class SubscriptionRunner:
    """Feeds one subscription's events to a handler from a pool of worker tasks.

    With ``traced``, each event gets an ``invoke_agent`` span while ``telemetry`` (the
    runtime's; default: the process's) is active.
    """

    def __init__(
        self,
        owner: str,
        sub: Subscription,
        ctx: Any,
        *,
        on_event: EventFn | None = None,
        on_batch: BatchFn | None = None,
        concurrency: int = 1,
        limiter: Limiter | None = None,
        traced: bool = True,
        telemetry: Telemetry | None = None,
    ) -> None:
        if (on_event is None) == (on_batch is None):
            raise ValueError("give exactly one of on_event and on_batch")
        self.owner = owner
        self.sub = sub
        self._ctx = ctx
        self._on_event = on_event
        self._on_batch = on_batch
        self._concurrency = 1 if on_batch else max(1, concurrency)
        self._limiter = limiter
        self._traced = traced
        self._telemetry = telemetry or DEFAULT
        self._leading = False
        self._waking = False
        self._idle: deque[asyncio.Future[None]] = deque()
        self._pending: deque[Envelope] = deque()
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        name = f"loom:{self.owner}:{self.sub.pattern}"
        if self._on_batch:
            worker = self._batch_worker
        elif self._concurrency > 1:
            worker = self._event_worker
        else:
            worker = self._ordered_worker
        self._workers = [
            loop.create_task(worker(), name=f"{name}#{i}") for i in range(self._concurrency)
        ]

    def _wake_one(self) -> None:
        """Wakes one idle worker, unless one is already on its way."""
        if self._waking:
            return
        idle = self._idle
        while idle:
            fut = idle.popleft()
            if not fut.done():
                fut.set_result(None)
                self._waking = True
                return

    async def _wait(self) -> bool:
        """Waits until events may be queued. False when closed and drained."""
        sub = self.sub.queue
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._leading:
            # Someone already watches the queue: wait to be handed work.
            self._idle.append(fut)
            try:
                await fut
            finally:
                self._waking = False
            return True
        self._leading = True
        try:
            if sub.arm(loop, fut):
                await fut
        finally:
            self._leading = False
        if self._concurrency > 1:
            # This worker goes to work: another takes over watching the queue.
            self._wake_one()
        if sub.closed and sub.depth == 0:
            # Release the followers so they can see the end too.
            for f in self._idle:
                if not f.done():
                    f.set_result(None)
            self._idle.clear()
            return False
        return True

    def _fixed_topic(self) -> str | None:
        """The topic of every event when the pattern has no wildcard (it is the topic):
        handlers get it without a read of ``event.topic`` per event."""
        pattern = self.sub.pattern
        return None if any(t in ("*", ">") for t in pattern.split(".")) else pattern

    async def _ordered_worker(self) -> None:
        """The only worker of its subscription: events one after the other, in order."""
        # The hot loop: everything is a local, no per-event coroutine of our own.
        take = self.sub.queue.take
        on_event = self._on_event
        assert on_event is not None
        lim = self._limiter
        waiters = lim.waiters if lim is not None else None
        coroutine = _CoroutineType
        awaitable = is_awaitable
        ctx = self._ctx
        traced = self._traced
        telemetry = self._telemetry
        fixed = self._fixed_topic()
        # A slot of the agent's limiter is kept from one handler to the next while
        # nobody waits for one: between two handlers nothing else runs (no await), so
        # it is the same as releasing and taking it again, without the bookkeeping.
        held = False
        try:
            while True:
                events = take(BATCH_MAX)
                if not events:
                    if held:
                        held = _release(lim)
                    if not await self._wait():
                        return
                    continue
                for event in events:
                    if traced and telemetry.active:
                        if held:
                            held = _release(lim)
                        await self._handle_traced(event)
                        continue
                    if not held and lim is not None:
                        if lim.free > 0:
                            lim.free -= 1
                        else:
                            await lim.acquire()
                        held = True
                    try:
                        result = on_event(ctx, fixed or event.topic, event)
                        if result.__class__ is coroutine:
                            await result
                        elif result is not None and awaitable(result):
                            await result
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        self._log_failure(event)
                    if held and waiters:
                        held = _release(lim)  # someone waits for a slot: hand it over
        finally:
            if held:
                _release(lim)

    async def _event_worker(self) -> None:
        """One of a pool of workers sharing the subscription (``concurrency > 1``)."""
        take = self.sub.queue.take
        # Taken events wait in a deque shared by this subscription's workers, so a
        # handler that suspends never sits on events another worker could run.
        pending = self._pending
        on_event = self._on_event
        assert on_event is not None
        lim = self._limiter
        waiters = lim.waiters if lim is not None else None
        coroutine = _CoroutineType
        awaitable = is_awaitable
        ctx = self._ctx
        traced = self._traced
        telemetry = self._telemetry
        idle = self._idle
        popleft = pending.popleft
        fixed = self._fixed_topic()
        held = False  # a limiter slot kept between handlers (see _ordered_worker)
        try:
            while True:
                if not pending:
                    events = take(BATCH_MAX)
                    if not events:
                        if held:
                            held = _release(lim)
                        if not await self._wait():
                            return
                        continue
                    pending.extend(events)
                while pending:
                    event = popleft()
                    if pending and idle and not self._waking:
                        # More is waiting: bring in a helper (at most one on its way at
                        # a time; each helper brings the next), so a slow handler never
                        # sits on events another worker could run.
                        self._wake_one()
                    if traced and telemetry.active:
                        if held:
                            held = _release(lim)
                        await self._handle_traced(event)
                        continue
                    if not held and lim is not None:
                        if lim.free > 0:
                            lim.free -= 1
                        else:
                            await lim.acquire()
                        held = True
                    try:
                        result = on_event(ctx, fixed or event.topic, event)
                        if result.__class__ is coroutine:
                            await result
                        elif result is not None and awaitable(result):
                            await result
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        self._log_failure(event)
                    if held and waiters:
                        held = _release(lim)
        finally:
            if held:
                _release(lim)

    def _log_failure(self, event: Envelope) -> None:
        log.exception(
            "agent %s: handler failed on event %s (topic %s, type %s)",
            self.owner,
            event.id,
            event.topic,
            event.type,
        )

    async def _handle_traced(self, event: Envelope) -> None:
        """The slow path when tracing is on: one ``invoke_agent`` span per event."""
        from loom.telemetry.agent_spans import invoke_agent_span, mark_failed

        assert self._on_event is not None
        lim = self._limiter
        if lim is not None:
            await lim.acquire()
        try:
            with invoke_agent_span(self._telemetry, self.owner, event) as span:
                try:
                    await resolve(self._on_event(self._ctx, event.topic, event))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    mark_failed(span, exc)
                    self._log_failure(event)
        finally:
            if lim is not None:
                lim.release()

    async def _batch_worker(self) -> None:
        assert self._on_batch is not None
        take = self.sub.queue.take
        while True:
            events = take(BATCH_MAX)
            if not events:
                if not await self._wait():
                    return
                continue
            try:
                await resolve(self._on_batch(self._ctx, self.sub.pattern, events))
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
        _, pending = await asyncio.wait(self._workers, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        self._workers = []
        return not pending


def durable_delivery(
    ctx: Any, pattern: str, on_event: EventFn | None, on_batch: BatchFn | None, limiter: Limiter
) -> Callable[[Envelope], Awaitable[None]]:
    """``deliver(event)`` for a stored (JetStream) subscription: runs the handler under
    the agent's concurrency limit, in an ``invoke_agent`` span when tracing, and raises
    what the handler raised — so the event is redelivered instead of acked. A batch
    handler gets the events one at a time (each is acked on its own)."""
    telemetry: Telemetry = ctx.telemetry

    def call(event: Envelope) -> Any:
        if on_event is not None:
            return on_event(ctx, event.topic, event)
        assert on_batch is not None
        return on_batch(ctx, pattern, [event])

    async def deliver(event: Envelope) -> None:
        await limiter.acquire()
        try:
            if telemetry.active:
                from loom.telemetry.agent_spans import invoke_agent_span, mark_failed

                with invoke_agent_span(telemetry, ctx.agent_id, event) as span:
                    try:
                        await resolve(call(event))
                    except Exception as exc:
                        mark_failed(span, exc)
                        raise
            else:
                await resolve(call(event))
        finally:
            limiter.release()

    return deliver

"""The event bus, as Python sees it.

:class:`EventBus` wraps the Rust bus (``loom._core.Bus``) with the asyncio side:
awaiting room on ``reliable`` subscribers, and :class:`Subscription` objects that can be
awaited one event or one batch at a time without blocking the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from loom import _core
from loom._core import Envelope
from loom.errors import BusClosedError

QoS = Literal["realtime", "reliable", "background"]

#: How long a publisher waits for room on a full ``reliable`` subscriber by default.
DEFAULT_PUBLISH_TIMEOUT = 5.0

#: Hop limit of a new event; each reply or relay decrements it.
DEFAULT_TTL = 32


@dataclass(frozen=True)
class SubscriptionStats:
    """Counters of one subscription (see ``docs/concepts.md``)."""

    id: int
    pattern: str
    group: str | None
    qos: str
    capacity: int
    depth: int
    enqueued: int
    delivered: int
    dropped: Mapping[str, int]


@dataclass(frozen=True)
class TopicStats:
    """Counters of one concrete topic."""

    topic: str
    published: int
    delivered: int
    dropped: int
    subscribers: int


@dataclass(frozen=True)
class BusStats:
    """A snapshot of the bus: totals, per topic and per subscription."""

    published: int
    untracked_published: int
    topics: dict[str, TopicStats] = field(default_factory=dict)
    subscriptions: list[SubscriptionStats] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain dicts (JSON-friendly)."""
        return {
            "published": self.published,
            "untracked_published": self.untracked_published,
            "topics": {k: vars(v) for k, v in self.topics.items()},
            "subscriptions": [{**vars(s), "dropped": dict(s.dropped)} for s in self.subscriptions],
        }


class SubscriptionWatcher(Protocol):
    """Told about subscriptions as they come and go (see :meth:`EventBus.watch`)."""

    def subscribed(self, sub: Subscription) -> None: ...

    def unsubscribed(self, sub: Subscription) -> None: ...


class Subscription:
    """A subscription's queue on the asyncio side.

    ``await sub.get()`` returns the next event; ``await sub.get_batch()`` every pending
    event (up to ``max``) in one call; ``async for event in sub`` iterates until the
    subscription is closed.
    """

    __slots__ = ("_loop", "_on_close", "_sub")

    def __init__(
        self, sub: _core.Subscription, on_close: Callable[[Subscription], None] | None = None
    ) -> None:
        self._sub = sub
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_close = on_close

    @property
    def queue(self) -> _core.Subscription:
        """The Rust queue itself, for loops that take events with no Python call in
        between (the agents' dispatcher)."""
        return self._sub

    @property
    def id(self) -> int:
        return self._sub.id

    @property
    def pattern(self) -> str:
        return self._sub.pattern

    @property
    def qos(self) -> str:
        return self._sub.qos

    @property
    def group(self) -> str | None:
        """The queue group, if any."""
        return self._sub.group

    @property
    def depth(self) -> int:
        """Events queued right now."""
        return self._sub.depth

    @property
    def closed(self) -> bool:
        return self._sub.closed

    def take(self, max: int = 256) -> list[Envelope]:
        """Takes up to ``max`` queued events without waiting."""
        return self._sub.take(max)

    async def wait(self) -> bool:
        """Waits until an event is queued. Returns ``False`` once closed and drained."""
        sub = self._sub
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        while True:
            fut = loop.create_future()
            if not sub.arm(loop, fut):
                # Ready now, or closed: closed and empty means the end.
                return not (sub.closed and sub.depth == 0)
            await fut

    async def get_batch(self, max: int = 256) -> list[Envelope]:
        """The pending events (at least one), up to ``max``.

        Raises:
            BusClosedError: the subscription is closed and drained.
        """
        while True:
            batch = self._sub.take(max)
            if batch:
                return batch
            if not await self.wait():
                raise BusClosedError(f"subscription {self.pattern!r} is closed")

    async def get(self) -> Envelope:
        """The next event.

        Raises:
            BusClosedError: the subscription is closed and drained.
        """
        return (await self.get_batch(1))[0]

    async def __aiter__(self) -> AsyncIterator[Envelope]:
        while True:
            batch = self._sub.take(256)
            if not batch:
                if not await self.wait():
                    return
                continue
            for event in batch:
                yield event

    def stats(self) -> SubscriptionStats:
        return SubscriptionStats(**self._sub.stats())

    def unsubscribe(self) -> bool:
        """Stops delivery; queued events can still be taken. Idempotent."""
        removed = self._sub.unsubscribe()
        if removed and self._on_close is not None:
            self._on_close(self)
        return removed

    def __repr__(self) -> str:
        return f"Subscription(id={self.id}, pattern={self.pattern!r}, qos={self.qos!r})"


class EventBus:
    """The process's event bus (NATS subject syntax: ``*`` one token, ``>`` the rest)."""

    def __init__(self, core: _core.Bus | None = None) -> None:
        self._core = core or _core.Bus()
        # Bound once: publish is the hot path.
        self._publish = self._core.publish
        self._watchers: list[SubscriptionWatcher] = []

    def watch(self, watcher: SubscriptionWatcher) -> None:
        """Tells ``watcher`` about every subscription made from now on, and when it
        ends (how a transport such as NATS learns which subjects to import)."""
        self._watchers.append(watcher)

    @property
    def core(self) -> _core.Bus:
        """The underlying Rust bus."""
        return self._core

    def subscribe(
        self,
        pattern: str,
        *,
        qos: QoS = "realtime",
        capacity: int | None = None,
        group: str | None = None,
    ) -> Subscription:
        """Subscribes to ``pattern``. With ``group``, the subscription joins that queue
        group: each event goes to one member (the least busy) instead of all of them,
        as in NATS — a pool of workers.

        Raises:
            InvalidTopicError: the pattern is malformed.
            ValueError: unknown ``qos`` or ``capacity < 1``.
        """
        sub = self._core.subscribe(pattern, qos, capacity, group)
        if not self._watchers:
            return Subscription(sub)
        wrapped = Subscription(sub, self._closed)
        for w in self._watchers:
            w.subscribed(wrapped)
        return wrapped

    def observe(self, pattern: str, *, capacity: int = 512) -> Subscription:
        """Watches ``pattern`` without being a subscriber: a ``background`` queue of
        ``capacity`` (full: new events are dropped there, never delaying a publisher)
        that the topics' delivered/dropped/subscriber counters leave out, and that
        watchers (a NATS bridge importing subjects) are not told about — what watches
        the bus (the dashboard) changes neither its figures nor its traffic.

        Raises:
            InvalidTopicError: the pattern is malformed.
            ValueError: ``capacity < 1``.
        """
        return Subscription(self._core.observe(pattern, capacity))

    def _closed(self, sub: Subscription) -> None:
        for w in self._watchers:
            w.unsubscribed(sub)

    def publish_nowait(
        self,
        topic: str,
        type: str = "event",
        payload: Any = None,
        **fields: Any,
    ) -> _core.PendingPublish | None:
        """Publishes without waiting; returns a pending publish if ``reliable``
        subscribers were full (see :meth:`publish`)."""
        return self._publish(topic, type, payload, **fields)

    async def publish(
        self,
        topic: str,
        type: str = "event",
        payload: Any = None,
        *,
        timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        **fields: Any,
    ) -> None:
        """Publishes an event, waiting up to ``timeout`` seconds for room on full
        ``reliable`` subscribers (other subscribers are served immediately).

        Raises:
            InvalidTopicError: the topic is malformed.
            BusFullError: a ``reliable`` subscriber stayed full for ``timeout``.
        """
        pending = self._publish(topic, type, payload, **fields)
        if pending is not None:
            await wait_pending(pending, timeout)

    def stats(self) -> BusStats:
        """A snapshot of the bus's counters."""
        raw = self._core.stats()
        return BusStats(
            published=raw["published"],
            untracked_published=raw["untracked_published"],
            topics={t["topic"]: TopicStats(**t) for t in raw["topics"]},
            subscriptions=[SubscriptionStats(**s) for s in raw["subscriptions"]],
        )

    def close(self) -> None:
        """Closes the bus and every subscription."""
        self._core.close()

    @property
    def closed(self) -> bool:
        return self._core.closed


# ``_core.Done`` implements the coroutine protocol (``send``, ``throw``, ``close``,
# ``__await__``): registered, ``asyncio.create_task`` and ``asyncio.run`` take it.
Coroutine.register(_core.Done)

#: An awaitable that is already finished (``await`` gives ``None`` at once): what
#: ``ctx.emit`` returns when the event was published and nobody has to wait. Cheaper
#: to await than a coroutine (two C slots, no frame); stateless, so one instance
#: serves every caller, any number of times.
DONE: Coroutine[Any, Any, None] = cast("Coroutine[Any, Any, None]", _core.Done())


async def wait_pending(pending: _core.PendingPublish, timeout: float) -> None:
    """Waits for room on the full ``reliable`` subscribers of ``pending``."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while not pending.retry():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise pending.give_up(timeout)
        fut = loop.create_future()
        if pending.arm(loop, fut):
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                raise pending.give_up(timeout) from None


__all__ = [
    "DEFAULT_PUBLISH_TIMEOUT",
    "DEFAULT_TTL",
    "BusStats",
    "Envelope",
    "EventBus",
    "QoS",
    "Subscription",
    "SubscriptionStats",
    "TopicStats",
]

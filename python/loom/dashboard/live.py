"""The live part of the dashboard: the event stream pages listen to, and topic rates.

Nothing here costs anything per event while no page listens: each page that connects
gets a bus observer on its topic filter (:meth:`EventBus.observe`: a small
``background`` queue, left out of the topics' counters and never imported from NATS),
removed when the page leaves. With a page open, the bus's Rust side copies each
matching event into that small queue; when it is full, further events are dropped there
(counted by the bus, never slowing a publisher), so at high rates the pages see a
sample and the counts of what they did not see. Rates come from the bus's own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loom._core import Envelope
from loom._secrets import redacted
from loom.bus import EventBus, Subscription
from loom.telemetry.content import content_text

log = logging.getLogger("loom.dashboard")

#: Events a page's bus observer holds between two ticks; more are dropped there.
OBSERVER_CAPACITY = 128
#: Seconds between two batches sent to the pages.
TICK = 0.1
#: Characters of a payload shown when content capture is on.
PREVIEW_CHARS = 400
#: Messages a slow page may have waiting before it is sent counts only.
CLIENT_BACKLOG = 64


@dataclass(eq=False)
class Listener:
    """One page's stream: its topic filter, its budget per tick and its outbox."""

    pattern: str
    budget: int
    outbox: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(CLIENT_BACKLOG)
    )
    #: Events matching the filter that the page was not sent (over its rate, or the
    #: page was too slow to take them).
    skipped: int = 0


def event_summary(event: Envelope, capture: bool) -> dict[str, Any]:
    """What a page is shown of ``event``: ids, type, size — and with content capture
    on, a short preview of the payload with secret-looking keys masked."""
    payload = event.payload
    text = content_text(redacted(payload)) if payload is not None else ""
    out: dict[str, Any] = {
        "id": event.id,
        "topic": event.topic,
        "type": event.type,
        "source": event.source,
        "correlation_id": event.correlation_id,
        "reply_to": event.reply_to,
        "ts": event.timestamp,
        "size": len(text),
        "delivery": event.delivery_count,
    }
    if capture and payload is not None:
        out["preview"] = text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"
    return out


class EventStream:
    """Gives each listening page a sample of the events matching its filter (see the
    module docs): one bus observer per page, on the page's own pattern, so events it
    does not want are never copied for it."""

    def __init__(self, bus: EventBus, capture: Callable[[], bool], rate: int) -> None:
        self._bus = bus
        self._capture = capture
        self._rate = rate
        self._listeners: dict[Listener, tuple[Subscription, asyncio.Task[None]]] = {}
        #: (source, topic) pairs seen in the stream while a page listens (counts are of
        #: the events the stream saw); the run's spans give the rest.
        self.edges: Counter[tuple[str, str]] = Counter()

    @property
    def observer_ids(self) -> set[int]:
        """The ids of the stream's bus observers (one per listening page)."""
        return {sub.id for sub, _ in self._listeners.values()}

    @property
    def listening(self) -> int:
        return len(self._listeners)

    def listen(self, pattern: str) -> Listener:
        """A new listener for topics matching ``pattern``.

        Raises:
            InvalidTopicError: a malformed pattern.
        """
        sub = self._bus.observe(pattern, capacity=OBSERVER_CAPACITY)
        listener = Listener(pattern, budget=max(1, int(self._rate * TICK)))
        task = asyncio.get_running_loop().create_task(
            self._pump(listener, sub), name="loom:dashboard:stream"
        )
        self._listeners[listener] = (sub, task)
        return listener

    def leave(self, listener: Listener) -> None:
        """Ends ``listener`` and its bus observer."""
        found = self._listeners.pop(listener, None)
        if found is not None:
            sub, task = found
            sub.unsubscribe()
            task.cancel()

    async def close(self) -> None:
        tasks = [task for _, task in self._listeners.values()]
        for listener in list(self._listeners):
            self.leave(listener)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _pump(self, listener: Listener, sub: Subscription) -> None:
        last_dropped = 0
        while True:
            if not await sub.wait():
                return
            batch = sub.take(OBSERVER_CAPACITY)
            dropped = sum(sub.stats().dropped.values())
            missed, last_dropped = dropped - last_dropped, dropped
            self._deliver(listener, batch, missed)
            # Batching by time: at high rates the queue fills and the bus drops the
            # rest, instead of this loop waking per event.
            await asyncio.sleep(TICK)

    def _deliver(self, listener: Listener, batch: list[Envelope], missed: int) -> None:
        for event in batch:
            if event.source:
                self.edges[(event.source, event.topic)] += 1
        capture = self._capture()
        shown = [event_summary(e, capture) for e in batch[: listener.budget]]
        skipped = len(batch) - len(shown)
        if not shown and not skipped and not missed:
            return
        message = {"events": shown, "skipped": skipped, "missed": missed}
        try:
            listener.outbox.put_nowait(message)
        except asyncio.QueueFull:
            listener.skipped += len(shown) + skipped


class RateMeter:
    """Per-topic publish rates from successive bus snapshots (no per-event work)."""

    def __init__(self, window: float = 2.0) -> None:
        self._window = window
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def rates(self, published: dict[str, int]) -> dict[str, float]:
        """Events per second of each topic over the last ``window`` seconds, given the
        topics' published counters now."""
        now = time.monotonic()
        self._samples.append((now, published))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()
        then, old = self._samples[0]
        dt = now - then
        if dt <= 0:
            return {t: 0.0 for t in published}
        return {t: max(0.0, (n - old.get(t, 0)) / dt) for t, n in published.items()}


__all__ = ["EventStream", "Listener", "RateMeter", "event_summary"]

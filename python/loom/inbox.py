"""An agent's inbox: the topic its requests' replies come back to.

Replies resolve the request waiting for their correlation id (or go to a collector, for
primitives that expect several replies to one message); late replies to a request given
up on are dropped; anything else is a direct message, handed to the agent's handler.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from loom._core import Envelope
from loom._dispatch import Limiter, SubscriptionRunner

if TYPE_CHECKING:
    from loom.runtime import Runtime
    from loom.telemetry.state import Telemetry

log = logging.getLogger("loom.agent")

#: How many abandoned correlation ids an agent remembers (to drop late replies).
ABANDONED_MAX = 4096

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

Direct = Callable[[Envelope], Awaitable[Any]]


class Inbox:
    """One agent's inbox topic and the requests waiting on it."""

    def __init__(self, agent_id: str, limiter: Limiter, telemetry: Telemetry) -> None:
        self.agent_id = agent_id
        #: The topic replies to this agent's requests are sent to.
        self.topic = f"_INBOX.{_UNSAFE.sub('_', agent_id) or 'agent'}.{uuid.uuid4().hex[:12]}"
        self._limiter = limiter
        self._telemetry = telemetry
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        # Correlation ids of requests given up on (timeout, cancel, gather done): late
        # replies to them are dropped, not mistaken for direct messages.
        self._abandoned: dict[str, None] = {}
        self._collectors: dict[str, Callable[[Envelope], None]] = {}
        self._direct: Direct | None = None
        self.runner: SubscriptionRunner | None = None

    def start(self, runtime: Runtime, owner: Any, direct: Direct | None) -> None:
        """Subscribes to the inbox: replies resolve requests; other direct messages go
        to ``direct`` (the agent's handler), as a durable run when durability is on."""
        durability = runtime.durability
        if durability is not None and direct is not None:
            inner = direct
            run = durability.wrap(owner, "inbox", lambda _ctx, _topic, event: inner(event))

            async def direct_run(event: Envelope) -> None:
                await run(owner, event.topic, event)

            direct = direct_run
        self._direct = direct
        sub = runtime.bus.subscribe(self.topic, qos="reliable", capacity=4096)
        # Not traced here: replies only resolve futures; direct messages get their
        # invoke_agent span in _on_event.
        self.runner = SubscriptionRunner(
            self.agent_id, sub, self, on_event=Inbox._on_event, concurrency=4, traced=False
        )
        self.runner.start()

    @contextmanager
    def expecting(self, correlation_id: str) -> Iterator[asyncio.Future[Envelope]]:
        """A future for the first reply with ``correlation_id`` while the block runs;
        unless it got one, the id is abandoned after it."""
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = fut
        try:
            yield fut
        finally:
            self._pending.pop(correlation_id, None)
            if not fut.done() or fut.cancelled():
                self.abandon(correlation_id)

    @contextmanager
    def collecting(
        self, correlation_id: str, collect: Callable[[Envelope], None]
    ) -> Iterator[None]:
        """Routes replies with ``correlation_id`` to ``collect`` while the block runs;
        later ones are dropped."""
        self._collectors[correlation_id] = collect
        try:
            yield
        finally:
            self._collectors.pop(correlation_id, None)
            self.abandon(correlation_id)

    def abandon(self, correlation_id: str) -> None:
        self._abandoned[correlation_id] = None
        if len(self._abandoned) > ABANDONED_MAX:
            del self._abandoned[next(iter(self._abandoned))]

    async def _on_event(self, _topic: str, event: Envelope) -> None:
        cid = event.correlation_id
        if cid is not None:
            if cid in self._abandoned:
                log.debug(
                    "%s: dropping late reply %s (%s) to an abandoned request",
                    self.agent_id,
                    event.id,
                    event.type,
                )
                return
            fut = self._pending.get(cid)
            if fut is not None:
                if not fut.done():
                    fut.set_result(event)
                return
            collect = self._collectors.get(cid)
            if collect is not None:
                collect(event)
                return
        if self._direct is None:
            log.debug("%s: dropping unsolicited inbox event %s", self.agent_id, event.id)
            return
        await self._limiter.acquire()
        try:
            if self._telemetry.active:
                from loom.telemetry.agent_spans import invoke_agent_span

                with invoke_agent_span(self._telemetry, self.agent_id, event):
                    await self._direct(event)
            else:
                await self._direct(event)
        finally:
            self._limiter.release()

    async def stop(self, timeout: float | None) -> bool:
        """Stops the subscription; requests still waiting are cancelled."""
        ok = True
        if self.runner is not None:
            ok = await self.runner.stop(timeout)
            self.runner = None
        for fut in self._pending.values():
            fut.cancel()
        return ok

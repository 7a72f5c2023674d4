"""The bridge between one runtime's in-process bus and core NATS (see
:mod:`loom.nats`)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from loom._host import ShutdownHost
from loom.bus import EventBus, Subscription
from loom.errors import BusError
from loom.nats.codec import REMOTE, decode_message, encode
from loom.nats.roundtrip import round_trip

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSubscription


log = logging.getLogger("loom.nats")


class BusHost(ShutdownHost, Protocol):
    """What the bridge needs of a runtime: its bus, and to be closed with it."""

    @property
    def bus(self) -> EventBus: ...


class NatsBridge:
    """Joins one runtime's bus to NATS (see the module documentation)."""

    def __init__(self, host: BusHost, client: Client) -> None:
        self.host = host
        self.nc = client
        #: Tags what this process sends, to recognise it when NATS echoes it back.
        self.origin = uuid.uuid4().hex
        # (subject, queue group) -> (NATS subscription, local subscriptions using it)
        self._imports: dict[tuple[str, str], NatsSubscription] = {}
        self._users: Counter[tuple[str, str]] = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._export: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self.sent = 0
        self.received = 0

    async def start(self) -> None:
        bus = self.host.bus
        bus.core.set_remote_groups(True)
        # Everything published here goes out; a background queue so that a slow
        # network never holds local publishers (drops are counted in the bus stats).
        self._export = bus.subscribe(">", qos="background", capacity=1 << 16)
        self._pump = asyncio.get_running_loop().create_task(self._send_loop(), name="loom:nats")
        bus.watch(self)

    # -- SubscriptionWatcher ---------------------------------------------------------

    def subscribed(self, sub: Subscription) -> None:
        key = (sub.pattern, sub.group or "")
        self._users[key] += 1
        if self._users[key] == 1:
            self._spawn(self._import(key))

    def unsubscribed(self, sub: Subscription) -> None:
        key = (sub.pattern, sub.group or "")
        self._users[key] -= 1
        if self._users[key] <= 0:
            del self._users[key]
            nsub = self._imports.pop(key, None)
            if nsub is not None and not self.nc.is_closed:
                self._spawn(nsub.unsubscribe())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _import(self, key: tuple[str, str]) -> None:
        subject, queue = key
        nsub = await self.nc.subscribe(subject, queue=queue, cb=self._receiver(queue))
        # The local subscription may have ended while we were subscribing.
        if key in self._users:
            self._imports[key] = nsub
            await round_trip(self.nc)
        else:
            await nsub.unsubscribe()

    def _receiver(self, queue: str) -> Callable[[Msg], Awaitable[None]]:
        async def receive(msg: Msg) -> None:
            try:
                kwargs, meta = decode_message(msg.subject, msg.data, msg.headers)
            except (ValueError, TypeError) as exc:
                log.warning("nats: dropping undecodable message on %s: %s", msg.subject, exc)
                return
            mine = meta.origin == self.origin
            if mine and not queue:
                return  # our own event, echoed: local subscribers already have it
            if mine:
                kwargs["ttl"] += 1  # it never left this process: no hop
            self.received += 1
            topic = kwargs.pop("topic")
            if queue:
                kwargs["to_group"] = queue  # NATS chose this process to serve the group
            try:
                await self.host.bus.publish(topic, **kwargs)
            except BusError as exc:
                log.warning("nats: could not deliver %s locally: %s", topic, exc)

        return receive

    async def _send_loop(self) -> None:
        assert self._export is not None
        while True:
            try:
                batch = await self._export.get_batch(1024)
            except BusError:  # closed: the runtime is stopping
                return
            publish, origin = self.nc.publish, self.origin
            for event in batch:
                headers = event.headers
                if REMOTE in headers:
                    continue
                try:
                    data, headers = encode(event, origin, headers)
                except BusError as exc:
                    log.error("nats: not sent: %s", exc)
                    continue
                await publish(event.topic, data, headers=headers)
                self.sent += 1

    async def flush(self, timeout: float = 5.0) -> None:
        """Waits until what was published locally has reached the NATS server."""
        assert self._export is not None
        deadline = asyncio.get_running_loop().time() + timeout
        # The pump empties the export queue; poll it (a rare, shutdown-time wait).
        while self._export.depth and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        await round_trip(self.nc, timeout=deadline - asyncio.get_running_loop().time())

    async def close(self) -> None:
        """Sends what is pending, then disconnects."""
        if self._export is not None and self._pump is not None:
            try:
                await self.flush(2.0)
            except Exception as exc:  # the server may be gone already
                log.debug("nats: final flush failed: %s", exc)
            self._export.unsubscribe()
            self._pump.cancel()
            await asyncio.gather(self._pump, *self._tasks, return_exceptions=True)
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as exc:  # reconnecting to a server that is gone
                log.debug("nats: drain failed (%s); closing", exc)
                await self.nc.close()

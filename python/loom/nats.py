"""The bus across processes and machines, over NATS.

:class:`NatsBridge` joins a runtime's in-process bus to a NATS server, so agents in
different processes talk with the same API (``ctx.emit``, ``ctx.request``, queue
groups, ``ctx.gather``...). Topics are NATS subjects already (same syntax), so the
mapping is 1:1:

* every event published locally is also published to NATS;
* for every local subscription the bridge subscribes to the same subject on NATS, and
  injects what arrives from *other* processes into the local bus, marked so it is not
  sent out again;
* a queue group becomes a NATS queue subscription, and NATS alone picks the member:
  local publishes skip local groups (``Bus.set_remote_groups``), and whichever process
  NATS hands the event to — this one included — serves it with one of its members.
  So a pool of workers spread over machines gets each job exactly once.

The envelope travels in NATS headers (``Loom-Type``, ``Loom-Id``, ``Loom-Source``,
``Loom-Correlation-Id``, ``Loom-Reply-To``, ``Loom-Thread-Id``, ``Loom-Ttl``,
``Loom-Timestamp``) next to the event's own headers — the W3C ``traceparent`` among
them, so a trace continues across processes. The payload is JSON (pydantic models and
dataclasses are converted); ``bytes`` travel raw. A payload that cannot be encoded is
logged and not sent.

Enable it in loom.toml (``[bus] nats = "nats://127.0.0.1:4222"``) or call
:func:`connect` yourself before starting agents.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from loom._core import Envelope
from loom._host import ShutdownHost
from loom._secrets import redact_url
from loom.bus import DEFAULT_TTL, EventBus, Subscription
from loom.errors import BusError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSubscription


log = logging.getLogger("loom.nats")

#: Marks events that came from NATS, so the bridge does not send them back out.
REMOTE = "loom-remote"
_ORIGIN = "Loom-Origin"
_PREFIX = "Loom-"
_FIELDS = ("Type", "Id", "Source", "Correlation-Id", "Reply-To", "Thread-Id", "Ttl", "Timestamp")


def encode(event: Envelope) -> tuple[bytes, dict[str, str]]:
    """An envelope as a NATS payload and headers.

    Raises:
        BusError: the payload is not JSON-serialisable.
    """
    headers = {k: v for k, v in event.headers.items() if k != REMOTE}
    headers[f"{_PREFIX}Type"] = event.type
    headers[f"{_PREFIX}Id"] = event.id
    headers[f"{_PREFIX}Ttl"] = str(event.ttl)
    headers[f"{_PREFIX}Timestamp"] = str(event.timestamp_ns)
    for name, value in (
        ("Source", event.source),
        ("Correlation-Id", event.correlation_id),
        ("Reply-To", event.reply_to),
        ("Thread-Id", event.thread_id),
    ):
        if value is not None:
            headers[f"{_PREFIX}{name}"] = value
    payload = event.payload
    if isinstance(payload, (bytes, bytearray, memoryview)):
        headers[f"{_PREFIX}Encoding"] = "bytes"
        return bytes(payload), headers
    try:
        from pydantic_core import to_json

        return to_json(payload), headers
    except Exception as exc:
        raise BusError(
            f"event {event.id} on {event.topic!r}: payload of type "
            f"{type(payload).__name__} is not JSON-serialisable ({exc})"
        ) from None


def decode(subject: str, data: bytes, headers: dict[str, str] | None) -> dict[str, Any]:
    """Keyword arguments for ``Bus.publish`` from a NATS message."""
    h = dict(headers or {})
    fields = {name: h.pop(f"{_PREFIX}{name}", None) for name in _FIELDS}
    encoding = h.pop(f"{_PREFIX}Encoding", None)
    if encoding == "bytes":
        payload: Any = data
    elif data:
        payload = json.loads(data)
    else:
        payload = None
    h[REMOTE] = "1"
    if fields["Id"]:
        h["loom-remote-id"] = fields["Id"]
    return {
        "topic": subject,
        "type": fields["Type"] or "event",
        "payload": payload,
        "source": fields["Source"],
        "correlation_id": fields["Correlation-Id"],
        "reply_to": fields["Reply-To"],
        "thread_id": fields["Thread-Id"],
        "ttl": max(int(fields["Ttl"] or DEFAULT_TTL) - 1, 0),  # crossing NATS is a hop
        "headers": h,
    }


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
            await self.nc.flush()
        else:
            await nsub.unsubscribe()

    def _receiver(self, queue: str) -> Callable[[Msg], Awaitable[None]]:
        async def receive(msg: Msg) -> None:
            mine = (msg.headers or {}).get(_ORIGIN) == self.origin
            if mine and not queue:
                return  # our own event, echoed: local subscribers already have it
            try:
                kwargs = decode(msg.subject, msg.data, msg.headers)
            except (ValueError, TypeError) as exc:
                log.warning("nats: dropping undecodable message on %s: %s", msg.subject, exc)
                return
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
            for event in batch:
                if event.headers.get(REMOTE):
                    continue
                try:
                    data, headers = encode(event)
                except BusError as exc:
                    log.error("nats: not sent: %s", exc)
                    continue
                headers[_ORIGIN] = self.origin
                await self.nc.publish(event.topic, data, headers=headers)
                self.sent += 1

    async def flush(self, timeout: float = 5.0) -> None:
        """Waits until what was published locally has reached the NATS server."""
        assert self._export is not None
        deadline = asyncio.get_running_loop().time() + timeout
        # The pump empties the export queue; poll it (a rare, shutdown-time wait).
        while self._export.depth and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        await self.nc.flush(timeout=max(int(deadline - asyncio.get_running_loop().time()), 1))

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
            await self.nc.drain()


async def connect(host: BusHost, url: str, *, name: str | None = None) -> NatsBridge:
    """Connects ``host``'s bus (a :class:`~loom.Runtime`) to the NATS server at
    ``url``; call it before starting agents. The bridge closes when the host stops.

    Raises:
        BusError: the server cannot be reached.
    """
    import nats

    shown = redact_url(url)  # nats://user:password@host is a common spelling

    async def on_error(exc: Exception) -> None:
        log.warning("nats %s: %s", shown, _without(str(exc), url))

    try:
        # The first connection must work (fail fast and clearly); after that the
        # client reconnects for as long as it takes.
        nc = await asyncio.wait_for(
            nats.connect(
                url,
                name=name or "loom",
                connect_timeout=3,
                max_reconnect_attempts=-1,
                error_cb=on_error,
            ),
            timeout=5,
        )
    except Exception as exc:
        detail = _without(str(exc), url) or type(exc).__name__
        raise BusError(f"cannot connect to NATS at {shown}: {detail}") from None
    bridge = NatsBridge(host, nc)
    await bridge.start()
    host.on_shutdown(bridge.close)
    log.info("bus joined to NATS at %s", shown)
    return bridge


def _without(text: str, url: str) -> str:
    """``text`` with ``url`` (as the client may quote it) shown without credentials."""
    return text.replace(url, redact_url(url)) if url else text

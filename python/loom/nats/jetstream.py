"""``reliable`` subscriptions over NATS JetStream: stored events, durable consumers,
ack after the handler returns, redelivery with backoff, a dead-letter subject.

* Events on the subjects of reliable subscriptions are stored in one stream
  (``[bus.jetstream] stream``), created or extended at start. A publish to a stored
  subject waits for the server's ack (``BusError`` on timeout) and carries the
  envelope id as ``Nats-Msg-Id``, so a retried publish is stored once.
* Each reliable subscription is a durable pull consumer named from its queue group, or
  else its agent, and its pattern: a restarted process continues where it stopped,
  and the members of a group — in any process — share one consumer, so each event is
  handled by one of them.
* An event is acked after its handler returns. A handler that raises is nak'ed with
  the configured backoff; its last allowed attempt goes to ``<dlq_prefix>.<topic>``
  with the error in ``Loom-Error`` and is terminated. A handler still running when its
  process stops is never acked: the server redelivers it.

The handler sees ``event.delivery_count`` (1 the first time) and the publisher's id as
``event.id``, to stay idempotent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from loom._core import Envelope, topic_matches
from loom._effects import reset_on_journaled, set_on_journaled
from loom.errors import BusError
from loom.nats.bridge import BusHost, NatsBridge
from loom.nats.codec import REMOTE_ID, decode_message, encode
from loom.nats.settings import JetStreamSettings

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

    from loom.nats.bridge import BusHost, NatsBridge

log = logging.getLogger("loom.nats.jetstream")

#: The delivery attempt, seen by handlers as ``event.delivery_count``.
DELIVERY_COUNT = "loom-delivery-count"
#: Why an event was dead-lettered, and where it came from.
ERROR_HEADER = "Loom-Error"
ORIGINAL_TOPIC = "Loom-Original-Topic"

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# A stored pattern must not swallow replies or the JetStream API.
# ``_loom.`` topics are Loom's own coordination (barriers): live, never replayed.
_SYSTEM = ("_INBOX", "_loom", "$JS", "$SYS", "$KV", "$O")

#: ``deliver(event)``: runs the handler; raises if it failed.
Deliver = Callable[[Envelope], Awaitable[None]]


def subject_covers(wide: str, narrow: str) -> bool:
    """Whether every subject ``narrow`` matches is matched by ``wide`` (both NATS
    patterns)."""
    w, n = wide.split("."), narrow.split(".")
    for i, tok in enumerate(w):
        if tok == ">":
            return i < len(n)
        if i >= len(n):
            return False
        if n[i] == ">":
            return False
        if tok != "*" and tok != n[i]:
            return False
        # tok == "*" covers a literal or "*"
    return len(w) == len(n)


def storable(pattern: str) -> bool:
    """Whether a pattern may be stored: its first token is literal and not a system
    prefix (``>`` would capture every reply and the JetStream API itself)."""
    first = pattern.split(".", 1)[0]
    return first not in ("*", ">") and not first.startswith(_SYSTEM)


def consumer_name(owner: str, pattern: str) -> str:
    """The durable consumer of ``owner`` (a queue group or an agent id) on ``pattern``:
    readable, NATS-safe, unique per (owner, pattern)."""
    digest = hashlib.sha256(f"{owner}\0{pattern}".encode()).hexdigest()[:10]
    readable = _UNSAFE.sub("_", f"{owner}__{pattern}")[:48]
    return f"{readable}_{digest}"


@dataclass
class JetStreamStats:
    """Counters of one process's reliable traffic."""

    published: int = 0
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0
    failed: int = 0
    dead_lettered: int = 0


class JetStreamLink:
    """The stream and the consumers of one runtime (see the module documentation)."""

    def __init__(self, nc: Client, settings: JetStreamSettings, *, origin: str) -> None:
        self.nc = nc
        self.settings = settings
        self.origin = origin
        self.js: JetStreamContext = nc.jetstream(timeout=settings.publish_timeout)
        self.stats = JetStreamStats()
        self._subjects: list[str] = []
        self._covered: dict[str, bool] = {}
        self._refreshed = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.consumers: list[DurableConsumer] = []

    # -- the stream ------------------------------------------------------------------

    async def start(self, subjects: Iterable[str] = ()) -> None:
        """Creates the stream, or checks and extends it, to store ``subjects`` (the
        reliable topics the project declares), the configured ones and the DLQ.

        Raises:
            BusError: JetStream is not enabled on the server, or the stream cannot be
                created (another stream owns an overlapping subject, ...).
        """
        wanted = [*self.settings.subjects, *subjects, f"{self.settings.dlq_prefix}.>"]
        await self.ensure_subjects(wanted)

    async def ensure_subjects(self, patterns: Iterable[str]) -> None:
        """Makes the stream store ``patterns`` (kept minimal: a pattern another one
        covers is not added)."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        patterns = [p for p in patterns if storable(p)]
        async with self._lock:
            s = self.settings
            try:
                try:
                    info = await self.js.stream_info(s.stream)
                    current = list(info.config.subjects or [])
                except NotFoundError:
                    info, current = None, []
                merged = list(current)
                for p in patterns:
                    if any(subject_covers(c, p) for c in merged):
                        continue
                    merged = [c for c in merged if not subject_covers(p, c)] + [p]
                if info is not None and merged == current:
                    self._set_subjects(current)
                    return
                if info is not None:
                    # An existing stream keeps its policies and limits: only subjects
                    # are added (JetStream refuses some changes, and an operator may
                    # have tuned it).
                    info.config.subjects = merged
                    await self.js.update_stream(info.config)
                    log.info("jetstream: stream %s now stores %s", s.stream, merged)
                    self._set_subjects(merged)
                    return
                config = api.StreamConfig(
                    name=s.stream,
                    subjects=merged,
                    retention=api.RetentionPolicy(s.retention),
                    storage=api.StorageType(s.storage),
                    num_replicas=s.replicas,
                    max_msgs=s.max_msgs,
                    max_bytes=s.max_bytes,
                    max_age=s.max_age,
                    duplicate_window=s.duplicate_window,
                )
                await self.js.add_stream(config)
                log.info("jetstream: created stream %s for %s", s.stream, merged)
            except Exception as exc:
                raise BusError(_explain(exc, s.stream)) from None
            self._set_subjects(merged)

    def _set_subjects(self, subjects: list[str]) -> None:
        self._subjects = subjects
        self._covered.clear()
        self._refreshed = time.monotonic()

    def covers(self, topic: str) -> bool:
        """Whether ``topic`` is stored (so a publish to it waits for the server's ack).

        The stream's subjects are re-read in the background every few seconds when a
        topic is not covered, so subjects another process added are seen.
        """
        hit = self._covered.get(topic)
        if hit is None:
            hit = any(topic_matches(s, topic) for s in self._subjects)
            if len(self._covered) > 4096:
                self._covered.clear()
            self._covered[topic] = hit
        if not hit and time.monotonic() - self._refreshed > 5.0 and self._refreshing is None:
            self._refreshed = time.monotonic()
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return hit

    async def _refresh(self) -> None:
        try:
            info = await self.js.stream_info(self.settings.stream)
            self._set_subjects(list(info.config.subjects or []))
        except Exception as exc:
            log.debug("jetstream: could not re-read the stream's subjects: %s", exc)
        finally:
            self._refreshing = None

    # -- publishing ------------------------------------------------------------------

    async def publish(self, event: Envelope, timeout: float | None = None) -> None:
        """Stores ``event`` and waits for the server's ack.

        Raises:
            BusError: no ack within ``timeout`` (default ``publish_timeout``), or the
                payload is not JSON-serialisable.
        """
        data, headers = encode(event, self.origin)
        headers["Nats-Msg-Id"] = event.id
        limit = timeout or self.settings.publish_timeout
        try:
            await self.js.publish(event.topic, data, headers=headers, timeout=limit)
        except Exception as exc:
            raise BusError(
                f"event {event.id} on {event.topic!r} was not stored by JetStream within "
                f"{limit}s: {_explain(exc, self.settings.stream)}"
            ) from None
        self.stats.published += 1

    # -- consuming -------------------------------------------------------------------

    def consumer(
        self,
        pattern: str,
        owner: str,
        deliver: Deliver,
        *,
        concurrency: int,
        group: str | None = None,
    ) -> DurableConsumer:
        """A durable consumer of ``pattern`` for ``owner`` (agent id) or its ``group``
        (not started)."""
        c = DurableConsumer(self, pattern, group or owner, deliver, concurrency, group)
        self.consumers.append(c)
        return c

    async def close(self, timeout: float = 5.0) -> None:
        """Stops every consumer (in-flight handlers get ``timeout`` seconds)."""
        await asyncio.gather(*(c.stop(timeout) for c in list(self.consumers)))
        if self._refreshing is not None:
            self._refreshing.cancel()


class DurableConsumer:
    """One reliable subscription's consumer: fetches, runs the handler, acks."""

    qos = "reliable"

    def __init__(
        self,
        link: JetStreamLink,
        pattern: str,
        owner: str,
        deliver: Deliver,
        concurrency: int,
        group: str | None,
    ) -> None:
        self.link = link
        self.pattern = pattern
        self.group = group
        self.name = consumer_name(owner, pattern)
        self.id = f"js:{self.name}:{id(self):x}"
        self._deliver = deliver
        self._concurrency = max(1, concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        # Messages being handled, with when their handler started (for _keep_alive).
        self._started: dict[int, tuple[Msg, float]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def stopping(self) -> bool:
        """Whether it has been told to stop (it fetches no more)."""
        return self._stopping

    @property
    def sub(self) -> DurableConsumer:
        """The subscription (itself), as :class:`~loom.context.AgentContext` keeps it."""
        return self

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"loom:jetstream:{self.name}"
        )

    def unsubscribe(self) -> None:
        """Stops fetching (the consumer stays on the server, to resume later)."""
        self._stopping = True

    async def _subscribe(self) -> Any:
        from nats.js import api

        s = self.link.settings
        await self.link.ensure_subjects([self.pattern])
        config = api.ConsumerConfig(
            durable_name=self.name,
            filter_subject=self.pattern,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait,
            max_deliver=s.max_deliver,
            max_ack_pending=s.max_ack_pending,
            deliver_policy=api.DeliverPolicy.ALL if s.deliver == "all" else api.DeliverPolicy.NEW,
            inactive_threshold=s.consumer_inactive_threshold or None,
        )
        return await self.link.js.pull_subscribe(
            self.pattern, durable=self.name, stream=s.stream, config=config
        )

    async def _run(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        try:
            psub = await self._subscribe()
        except Exception as exc:
            error = BusError(
                f"reliable subscription {self.pattern!r}: cannot create JetStream consumer "
                f"{self.name}: {_explain(exc, self.link.settings.stream)}"
            )
            log.error("jetstream: %s", error)
            if not self.ready.done():
                self.ready.set_exception(error)
                self.ready.exception()  # also logged: a caller may never await it
            return
        self.ready.set_result(None)
        try:
            while not self._stopping:
                free = self._concurrency - len(self._inflight)
                if free <= 0:
                    self._room.clear()
                    await self._room.wait()
                    continue
                try:
                    msgs = await psub.fetch(free, timeout=1.0)
                except (NatsTimeout, asyncio.TimeoutError):
                    continue
                except Exception as exc:
                    if self.stopping:
                        break
                    # Disconnected, or the server restarting: the client reconnects.
                    log.debug("jetstream %s: fetch failed: %s", self.name, exc)
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    if self.stopping:
                        await _quietly(msg.nak())  # not started: someone else takes it
                        continue
                    task = asyncio.get_running_loop().create_task(self._handle(msg))
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
        finally:
            try:
                await psub.unsubscribe()
            except Exception as exc:
                log.debug("jetstream %s: unsubscribe failed: %s", self.name, exc)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._room.set()

    async def _handle(self, msg: Msg) -> None:
        link = self.link
        try:
            delivered = msg.metadata.num_delivered or 1
        except Exception:
            delivered = 1
        try:
            event = _envelope(msg, delivered)
        except (ValueError, TypeError) as exc:
            log.error("jetstream %s: dropping undecodable message: %s", self.name, exc)
            await _quietly(msg.term())
            return
        link.stats.delivered += 1
        if delivered > 1:
            link.stats.redelivered += 1
        self._started[id(msg)] = (msg, time.monotonic())
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._keep_alive())
        acked = False

        async def ack() -> None:
            nonlocal acked
            try:
                await msg.ack()
                link.stats.acked += 1
                acked = True
                self._started.pop(id(msg), None)  # no more keep-alives for it
            except Exception as exc:
                log.warning(
                    "jetstream %s: ack of %s failed (it will be redelivered): %s",
                    self.name,
                    event.id,
                    exc,
                )

        # A durable run acks as soon as the journal holds it (loom._effects).
        token = set_on_journaled(ack)
        try:
            await self._deliver(event)
        except asyncio.CancelledError:
            # Stopping mid-handler: leave it unacked; the server redelivers it.
            raise
        except Exception as exc:
            link.stats.failed += 1
            if not acked:
                await self._failed(msg, event, delivered, exc)
            else:
                log.error("jetstream %s: the run of %s failed: %s", self.name, event.id, exc)
        else:
            if not acked:
                await ack()
        finally:
            reset_on_journaled(token)
            self._started.pop(id(msg), None)

    async def _keep_alive(self) -> None:
        """Tells the server which long handlers are still working (those running for
        over a third of ``ack_wait``), so they are not redelivered meanwhile. One task
        per consumer, not one per event."""
        wait = self.link.settings.ack_wait
        while not self._stopping:
            await asyncio.sleep(wait / 4)
            now = time.monotonic()
            for msg, since in list(self._started.values()):
                if now - since > wait / 3:
                    await _quietly(msg.in_progress())

    async def _failed(self, msg: Msg, event: Envelope, delivered: int, exc: Exception) -> None:
        s = self.link.settings
        error = f"{type(exc).__name__}: {exc}"[:1000]
        if delivered >= s.max_deliver:
            dlq = f"{s.dlq_prefix}.{event.topic}"
            log.error(
                "jetstream %s: event %s on %s failed %d times; dead-lettered to %s: %s",
                self.name,
                event.id,
                event.topic,
                delivered,
                dlq,
                error,
                exc_info=exc,
            )
            headers = dict(msg.headers or {})
            headers.pop("Nats-Msg-Id", None)
            headers[ERROR_HEADER] = error
            headers[ORIGINAL_TOPIC] = event.topic
            headers[DELIVERY_COUNT] = str(delivered)
            try:
                await self.link.js.publish(dlq, msg.data, headers=headers)
                self.link.stats.dead_lettered += 1
                await msg.term()
            except Exception as dlq_exc:
                # Not stored in the DLQ: leave it to be redelivered rather than lose it.
                log.error("jetstream %s: dead-lettering failed: %s", self.name, dlq_exc)
                await _quietly(msg.nak(delay=s.backoff[-1]))
            return
        delay = s.backoff[min(delivered - 1, len(s.backoff) - 1)]
        log.warning(
            "jetstream %s: handler failed on %s (%s, attempt %d of %d); redelivery in %ss",
            self.name,
            event.id,
            event.topic,
            delivered,
            s.max_deliver,
            delay,
            exc_info=exc,
        )
        await _quietly(msg.nak(delay=delay))

    async def stop(self, timeout: float | None) -> bool:
        """Stops fetching, lets in-flight handlers finish for ``timeout`` seconds (then
        cancels them, unacked). True if they all finished."""
        self._stopping = True
        self._room.set()
        finished = True
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
            for t in pending:
                t.cancel()
            if pending:
                finished = False
                await asyncio.wait(pending)
        if self._ticker is not None:
            self._ticker.cancel()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
        if self in self.link.consumers:
            self.link.consumers.remove(self)
        return finished


def _envelope(msg: Msg, delivered: int) -> Envelope:
    kwargs, meta = decode_message(msg.subject, msg.data, msg.headers)
    headers: dict[str, str] = kwargs["headers"]
    headers[DELIVERY_COUNT] = str(delivered)
    headers.pop(REMOTE_ID, None)
    headers.pop("Nats-Msg-Id", None)
    original = meta.id
    if original is not None and not _ID_RE.match(original):
        original = None  # published by something else than Loom: a new id
    return Envelope(
        kwargs["topic"],
        kwargs["type"],
        kwargs["payload"],
        source=kwargs["source"],
        correlation_id=kwargs["correlation_id"],
        reply_to=kwargs["reply_to"],
        thread_id=kwargs["thread_id"],
        ttl=kwargs["ttl"],
        headers=headers,
        id=original,
        timestamp_ns=meta.timestamp_ns,
    )


async def _quietly(aw: Awaitable[Any]) -> None:
    try:
        await aw
    except Exception as exc:
        log.debug("jetstream: %s", exc)


def _explain(exc: Exception, stream: str) -> str:
    text = str(exc) or type(exc).__name__
    if "no responders" in text.lower() or type(exc).__name__ in (
        "NoRespondersError",
        "ServiceUnavailableError",
    ):
        return (
            "JetStream is not enabled on the server (start nats-server with -js), or "
            "this user may not use it; set [bus.jetstream] enabled = false to keep "
            "reliable subscriptions on core NATS"
        )
    if "overlap" in text.lower():
        return f"{text} (another stream than {stream!r} stores some of these subjects)"
    return text


class JetStreamHost(BusHost, Protocol):
    """A runtime whose reliable subscriptions may go through JetStream."""

    jetstream: JetStreamLink | None


async def enable_jetstream(
    host: JetStreamHost,
    bridge: NatsBridge,
    settings: JetStreamSettings | None = None,
    subjects: Iterable[str] = (),
) -> JetStreamLink:
    """Routes ``host``'s reliable subscriptions and publishes to stored subjects through
    JetStream (``[bus] nats`` does this for a project; call it after
    :func:`loom.nats.connect` otherwise). Closed when the host stops.

    Raises:
        BusError: JetStream is not enabled on the server, or the stream is refused.
    """
    link = JetStreamLink(bridge.nc, settings or JetStreamSettings(), origin=bridge.origin)
    await link.start(subjects)
    host.jetstream = link
    # Registered after the bridge's close, so it runs first (last registered first).
    host.on_shutdown(link.close)
    return link

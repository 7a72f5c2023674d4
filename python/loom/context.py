"""``agent.ctx``: what an agent's code uses to talk to the world.

Contexts are not passed to the LLM; they are how your code reaches the bus, tools and
configuration.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from loom import _effects, collab, journaled
from loom._core import Envelope
from loom._dispatch import Limiter, SubscriptionRunner, durable_delivery
from loom._units import seconds
from loom.bus import (
    DEFAULT_PUBLISH_TIMEOUT,
    DEFAULT_TTL,
    DONE,
    QoS,
    Subscription,
    wait_pending,
)
from loom.durable.journal import RunJournal
from loom.durable.records import event_from_json, event_to_json, message_json
from loom.durable.runs import EFFECT_HEADER
from loom.errors import LoomError, RequestTimeout
from loom.inbox import Inbox
from loom.nats.codec import REMOTE, REMOTE_ID
from loom.nats.jetstream import DELIVERY_COUNT, DurableConsumer, JetStreamLink, storable

if TYPE_CHECKING:
    from loom.config import ProjectConfig
    from loom.kv import KeyValue
    from loom.prompts import PromptLoader
    from loom.runtime import Runtime

log = logging.getLogger("loom.agent")

#: The durable run's journal of the current task (``_effects.current``, without the call).
_journal_of_task = _effects.current_var().get

Handler = Callable[["AgentContext", str, Envelope], Awaitable[Any] | Any]
BatchHandler = Callable[["AgentContext", str, list[Envelope]], Awaitable[Any] | Any]

#: Headers a transport adds on arrival; a forwarded event (``emit(envelope=)``) drops
#: them, or the bridge would take it for one that came from NATS and not send it on.
_TRANSPORT_HEADERS = (REMOTE, REMOTE_ID, DELIVERY_COUNT)

#: Default seconds a request waits for its reply.
DEFAULT_REQUEST_TIMEOUT = 30.0


class AgentContext:
    """The agent's handle on the runtime: bus, request/reply, tools and config."""

    def __init__(
        self,
        agent_id: str,
        runtime: Runtime,
        config: Mapping[str, Any] | None = None,
        *,
        max_concurrency: int = 16,
    ) -> None:
        self.agent_id = agent_id
        self.runtime = runtime
        #: The agent's table from loom.toml (or the ``config`` given to ``Agent``).
        self.config: Mapping[str, Any] = dict(config or {})
        self._runners: dict[Any, SubscriptionRunner | DurableConsumer] = {}
        self._max_concurrency = max_concurrency
        self._limiter = Limiter(max_concurrency)
        self._publish = runtime.bus.core.publish
        #: The runtime's tracing state (read on every emit).
        self.telemetry = runtime.telemetry
        self._inbox = Inbox(agent_id, self._limiter, runtime.telemetry)
        #: The topic replies to this agent's requests are sent to.
        self.inbox = self._inbox.topic

    # -- project -------------------------------------------------------------------

    @property
    def project(self) -> ProjectConfig | None:
        """The loaded loom.toml, if the runtime has one."""
        return self.runtime.project

    @property
    def prompts(self) -> PromptLoader:
        """Prompt files of the project (``[prompts] dir``, default ``prompts/`` beside
        loom.toml; ``./prompts`` without a project)."""
        from loom.prompts import PromptLoader

        project = self.runtime.project
        return PromptLoader(project.prompt_dir if project else "prompts")

    def kv(self, bucket: str = "default") -> KeyValue:
        """A bucket of the runtime's key-value store, shared by its agents (and with
        other processes on the same ``[kv] path``): ``await ctx.kv("plans").put(key,
        value)``. See docs/kv.md."""
        return self.runtime.kv(bucket)

    # -- publishing ----------------------------------------------------------------

    def emit(
        self,
        topic: str,
        type: str = "event",
        payload: Any = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        thread_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        ttl: int = DEFAULT_TTL,
        timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        envelope: Envelope | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Publishes an event from this agent: ``await ctx.emit(topic, type, payload)``.

        ``payload`` should be JSON-serialisable (or bytes) so that the event can cross
        process boundaries; inside one process it is passed by reference.

        ``envelope=`` forwards an existing event to ``topic``: its type, payload,
        correlation id, reply-to, thread and headers (keywords given here win), with
        this agent as the source and a new id. Pass everything after ``payload`` by
        keyword (positions work too, in the order above, but say less).

        ``emit`` returns an awaitable; await it. Awaited at once (``await
        ctx.emit(...)``), it behaves as it reads: the event is published, and if a
        ``reliable`` subscriber is full the await waits for room (up to ``timeout``).
        When nothing else is involved (no forwarding, tracing, durable run or
        JetStream) the event is published by the call itself, before the await, and
        an invalid topic raises from the call; forgetting the ``await`` then still
        publishes it, but skips the wait for a full ``reliable`` subscriber (that
        subscriber misses the event, and Python warns that ``wait_pending`` was never
        awaited). Otherwise nothing happens until the await, as with any coroutine.

        Raises:
            InvalidTopicError: the topic is malformed.
            BusFullError: a ``reliable`` subscriber stayed full for ``timeout`` seconds.
            TypeError: ``envelope`` together with ``type`` or ``payload``.
        """
        if (
            envelope is None
            and not self.telemetry.active
            and _journal_of_task() is None
            and self.runtime.jetstream is None
        ):
            # The hot path (no forwarding, tracing, durable run or JetStream): one call
            # into Rust with positional arguments, and an awaitable that is already
            # done instead of a coroutine, unless a reliable subscriber was full.
            pending = self._publish(
                topic, type, payload, self.agent_id, correlation_id, reply_to, thread_id, ttl,
                dict(headers) if headers else None,
            )  # fmt: skip
            if pending is None:
                return DONE
            return wait_pending(pending, timeout)
        return self._emit(
            topic, type, payload, correlation_id, reply_to, thread_id, headers, ttl, timeout,
            envelope,
        )  # fmt: skip

    async def _emit(
        self,
        topic: str,
        type: str,
        payload: Any,
        correlation_id: str | None,
        reply_to: str | None,
        thread_id: str | None,
        headers: Mapping[str, str] | None,
        ttl: int,
        timeout: float,
        envelope: Envelope | None,
    ) -> None:
        """:meth:`emit` with everything: forwarding, durable runs, tracing, JetStream."""
        if envelope is not None:
            if payload is not None or type != "event":
                raise TypeError(
                    "emit(): give envelope= or type/payload, not both (the envelope's are sent)"
                )
            type, payload = envelope.type, envelope.payload
            correlation_id = correlation_id or envelope.correlation_id
            reply_to = reply_to or envelope.reply_to
            thread_id = thread_id or envelope.thread_id
            carried = envelope.headers
            for internal in _TRANSPORT_HEADERS:
                carried.pop(internal, None)  # how it reached us, not what it says
            if carried:
                headers = {**carried, **(headers or {})}
        effects = _effects.current()
        if effects is not None:
            message = message_json(topic, type, payload, correlation_id, reply_to, thread_id)

            async def send(key: str) -> None:
                await self.emit(
                    topic, type, payload, correlation_id=correlation_id, reply_to=reply_to,
                    thread_id=thread_id, headers={**(headers or {}), EFFECT_HEADER: key},
                    ttl=ttl, timeout=timeout,
                )  # fmt: skip

            await _effects.journaled(effects, "emit", message, send)
            return
        js = self.runtime.jetstream
        stored = js if js is not None and js.covers(topic) else None
        if self.telemetry.active:
            from loom.telemetry.agent_spans import publish_span

            span = publish_span(self.telemetry, topic, type, correlation_id, reply_to)
            if span is not None:
                # Inside the span, so the traceparent sent is the PRODUCER span's.
                with span:
                    if stored is not None:
                        await self._emit_stored(
                            stored, topic, type, payload, correlation_id, reply_to, thread_id,
                            headers, ttl, timeout,
                        )  # fmt: skip
                        return
                    pending = self._send(
                        topic, type, payload, correlation_id, reply_to, thread_id, ttl, headers
                    )
                    if pending is not None:
                        await wait_pending(pending, timeout)
                return
        if stored is not None:
            await self._emit_stored(
                stored, topic, type, payload, correlation_id, reply_to, thread_id, headers, ttl,
                timeout,
            )  # fmt: skip
            return
        pending = self._send(
            topic, type, payload, correlation_id, reply_to, thread_id, ttl, headers
        )
        if pending is not None:
            await wait_pending(pending, timeout)

    async def _emit_stored(
        self,
        js: JetStreamLink,
        topic: str,
        type: str,
        payload: Any,
        correlation_id: str | None,
        reply_to: str | None,
        thread_id: str | None,
        headers: Mapping[str, str] | None,
        ttl: int,
        timeout: float,
    ) -> None:
        """A publish to a stored (JetStream) subject: stored first, acked by the server,
        then handed to this process's other (non-durable) subscribers."""
        out = self.runtime.outgoing_headers(headers)
        event = Envelope(
            topic,
            type,
            payload,
            source=self.agent_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            thread_id=thread_id,
            ttl=ttl,
            headers=out,
        )
        await js.publish(event, timeout)
        local = dict(out or {})
        local[REMOTE] = "1"  # already on NATS: the bridge must not send it again
        pending = self._publish(
            topic,
            type,
            payload,
            source=self.agent_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            thread_id=thread_id,
            ttl=ttl,
            headers=local,
        )
        if pending is not None:
            await wait_pending(pending, timeout)

    def _send(
        self,
        topic: str,
        type: str,
        payload: Any,
        correlation_id: str | None,
        reply_to: str | None,
        thread_id: str | None,
        ttl: int,
        headers: Mapping[str, str] | None,
    ) -> Any:
        return self._publish(
            topic, type, payload, self.agent_id, correlation_id, reply_to, thread_id, ttl,
            self.runtime.outgoing_headers(headers),
        )  # fmt: skip

    async def request(
        self,
        topic: str,
        type: str = "request",
        payload: Any = None,
        *,
        timeout: float | None = None,
        thread_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_ms: float | None = None,
        correlation_id: str | None = None,
    ) -> Envelope:
        """Sends a request and waits for the first reply, for ``timeout`` seconds
        (default 30) or ``timeout_ms`` milliseconds. ``correlation_id`` (default: a new
        one) lets a caller that asks again after a restart be answered as the first
        time.

        Raises:
            RequestTimeout: no reply in time (also a ``TimeoutError``).
        """
        timeout = seconds(timeout, timeout_ms, what="request()") or DEFAULT_REQUEST_TIMEOUT
        effects = _effects.current()
        if effects is not None:
            message = message_json(topic, type, payload, None, None, thread_id)

            async def ask(key: str) -> Envelope:
                extra = {**(headers or {}), EFFECT_HEADER: key}
                cid = correlation_id or key
                return await self._request(topic, type, payload, timeout, thread_id, extra, cid)

            return await _effects.journaled(
                effects, "request", message, ask, encode=event_to_json, decode=event_from_json
            )
        return await self._request(
            topic, type, payload, timeout, thread_id, headers, correlation_id or uuid.uuid4().hex
        )

    async def _request(
        self,
        topic: str,
        type: str,
        payload: Any,
        timeout: float,
        thread_id: str | None,
        headers: Mapping[str, str] | None,
        correlation_id: str,
    ) -> Envelope:
        with self._inbox.expecting(correlation_id) as fut:
            try:
                await self.emit(
                    topic,
                    type,
                    payload,
                    correlation_id=correlation_id,
                    reply_to=self.inbox,
                    thread_id=thread_id,
                    headers=headers,
                    timeout=timeout,
                )
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise RequestTimeout(
                    f"{self.agent_id}: no reply to {type!r} on {topic!r} within {timeout}s "
                    f"(correlation_id {correlation_id})"
                ) from None

    async def reply(
        self,
        event: Envelope,
        type: str = "reply",
        payload: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answers ``event`` on its ``reply_to`` topic, with the same correlation id.

        An event that was emitted rather than requested has no ``reply_to``: the answer
        then goes to its sender, an agent of this runtime, whose ``on_event`` receives
        it on its inbox (correlation id: the event's id).

        The reply itself carries this agent's inbox as ``reply_to``, so the receiver
        can answer back (this is how contract-net awards reach a bidder).

        Raises:
            LoomError: ``event`` has no ``reply_to`` and its sender is no agent of this
                runtime (across processes, use :meth:`request` to get answers).
        """
        target = event.reply_to or self.runtime.inbox_of(event.source)
        if not target:
            raise LoomError(
                f"{self.agent_id}: event {event.id} ({event.type!r} on {event.topic!r}) "
                f"has no reply_to and its source {event.source!r} is no agent of this "
                "runtime; send it with ctx.request() to get a reply across processes"
            )
        correlation_id = event.correlation_id or event.id
        effects = _effects.current()
        if effects is None:
            await self.emit(
                target,
                type,
                payload,
                correlation_id=correlation_id,
                reply_to=self.inbox,
                thread_id=event.thread_id,
                headers=headers,
                ttl=max(event.ttl - 1, 0),
            )
            return
        message = message_json(target, type, payload, correlation_id, None, event.thread_id)
        aliases = effects.reply_aliases if isinstance(effects, RunJournal) else []

        async def answer(key: str) -> None:
            extra = {**(headers or {}), EFFECT_HEADER: key}
            targets = [(target, correlation_id), *aliases]
            for to, cid in targets:
                await self.emit(
                    to, type, payload, correlation_id=cid, reply_to=self.inbox,
                    thread_id=event.thread_id, headers=extra, ttl=max(event.ttl - 1, 0),
                )  # fmt: skip

        await _effects.journaled(effects, "reply", message, answer)

    # -- subscribing ---------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        handler: Handler | None = None,
        *,
        on_batch: BatchHandler | None = None,
        qos: QoS = "reliable",
        capacity: int | None = None,
        max_concurrency: int | None = None,
        group: str | None = None,
    ) -> Subscription:
        """Calls ``handler(ctx, topic, event)`` for events matching ``pattern`` (or
        ``on_batch(ctx, pattern, events)`` with every pending event at once). With
        ``group``, agents subscribed in the same queue group share the events: each
        goes to one of them (a worker pool).

        Must be called while the event loop runs. Returns the subscription; pass it to
        :meth:`unsubscribe` to stop.
        """
        durability = self.runtime.durability
        if durability is not None and handler is not None:
            handler = durability.wrap(self, pattern, handler)
        js = self.runtime.jetstream
        if js is not None and qos == "reliable" and storable(pattern):
            if handler is None and on_batch is None:
                raise TypeError("subscribe() needs a handler or on_batch")
            consumer = js.consumer(
                pattern,
                self.agent_id,
                durable_delivery(self, pattern, handler, on_batch, self._limiter),
                concurrency=max_concurrency or self._max_concurrency,
                group=group,
            )
            self._runners[consumer.id] = consumer
            consumer.start()
            return consumer  # type: ignore[return-value]
        sub = self.runtime.bus.subscribe(pattern, qos=qos, capacity=capacity, group=group)
        if on_batch is not None:
            runner = SubscriptionRunner(self.agent_id, sub, self, on_batch=on_batch)
        elif handler is not None:
            runner = SubscriptionRunner(
                self.agent_id,
                sub,
                self,
                on_event=handler,
                concurrency=max_concurrency or self._max_concurrency,
                limiter=self._limiter,
                telemetry=self.telemetry,
            )
        else:
            sub.unsubscribe()
            raise TypeError("subscribe() needs a handler or on_batch")
        self._runners[sub.id] = runner
        runner.start()
        return sub

    async def subscriptions_ready(self) -> None:
        """Waits until every reliable subscription over JetStream has its consumer.

        Raises:
            BusError: a consumer could not be created.
        """
        waiting = [r.ready for r in self._runners.values() if isinstance(r, DurableConsumer)]
        if waiting:
            await asyncio.gather(*waiting)

    async def unsubscribe(self, subscription: Subscription | str, *, timeout: float = 10.0) -> int:
        """Stops a subscription (or every subscription on a pattern), letting queued
        and in-flight events finish for up to ``timeout`` seconds. Returns how many
        subscriptions were stopped."""
        runners = [
            r
            for r in self._runners.values()
            if (r.sub is subscription)
            or (isinstance(subscription, str) and r.sub.pattern == subscription)
        ]
        for r in runners:
            self._runners.pop(r.sub.id, None)
        await asyncio.gather(*(r.stop(timeout) for r in runners))
        return len(runners)

    # -- tools ---------------------------------------------------------------------

    async def tool(
        self,
        name: str,
        payload: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        call_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_ms: float | None = None,
    ) -> Any:
        """Calls a registered tool and returns its parsed JSON result.

        ``timeout`` is in seconds (``timeout_ms`` in milliseconds, for code written for
        the original API). ``headers`` travel with the call: a Python tool reads them,
        with the call id, from :func:`loom.tools.current_call`.

        Raises:
            ToolNotFound: no such tool.
            ToolArgumentsInvalid: the arguments do not match its schema (``.errors``);
                also a ``payload`` that is not a mapping or nests deeper than
                ``loom._core.MAX_JSON_DEPTH`` (100) levels,
                and a ``timeout`` that is not a positive finite number.
            ToolDenied: the sandbox or an approval refused the call (``.rule``).
            ToolTimeout: it did not finish within ``timeout`` seconds.
            ToolFailed: it ran and failed.
        """
        timeout = seconds(timeout, timeout_ms, what=f"tool({name!r})")
        registry = await self.runtime.get_tools()
        return await registry.call(
            self, name, payload, timeout=timeout, call_id=call_id, headers=headers
        )

    async def tools(self) -> list[Any]:
        """Every registered tool (``ToolSpec``: name, description, JSON schema).
        ``[s.to_openai() for s in await ctx.tools()]`` gives the OpenAI format."""
        registry = await self.runtime.get_tools()
        specs: list[Any] = registry.specs()
        return specs

    # -- collaboration ---------------------------------------------------------------

    async def gather(
        self,
        topics: str | Sequence[str],
        type: str = "request",
        payload: Any = None,
        *,
        first: int | None = None,
        timeout: float = 5.0,
    ) -> list[Envelope]:
        """Fan-out/fan-in: sends one request to each topic (wildcard subscribers all
        answer) and collects replies until ``first`` have arrived or ``timeout``
        passes. Returns the replies in arrival order; possibly fewer than asked."""
        return await journaled.gather(self, topics, type, payload, first=first, timeout=timeout)

    async def barrier(self, name: str, parties: int, *, timeout: float = 30.0) -> list[str]:
        """Waits until ``parties`` agents have reached the barrier ``name``.

        Returns the ids of the agents that met. Raises ``RequestTimeout`` if they
        did not all arrive in time."""
        return await journaled.barrier(self, name, parties, timeout=timeout)

    async def contract_net(
        self,
        topic: str,
        task: Any,
        *,
        window: float = 1.0,
        choose: Callable[[list[Envelope]], Envelope | None] | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> collab.ContractResult:
        """Contract-net: calls for proposals on ``topic``, collects bids for
        ``window`` seconds, awards the task to the chosen bidder and returns its
        result. See :func:`loom.collab.contract_net`."""
        return await journaled.contract_net(
            self, topic, task, window=window, choose=choose, timeout=timeout
        )

    # -- the clock and randomness ------------------------------------------------------

    async def now(self) -> float:
        """Seconds since the Unix epoch — journaled in a durable run, so a resumed run
        sees the time its first attempt saw (``time.time()`` would differ)."""
        return await journaled.now()

    async def random(self) -> float:
        """A random float in [0, 1) — journaled in a durable run, like :meth:`now`."""
        return await journaled.random()

    # -- internals -----------------------------------------------------------------

    def _start_inbox(self, direct: Callable[[Envelope], Awaitable[Any]] | None) -> None:
        """Subscribes to the inbox: replies resolve requests; other direct messages go
        to ``direct`` (the agent's handler)."""
        self._inbox.start(self.runtime, self, direct)

    def collecting(
        self, correlation_id: str, collect: Callable[[Envelope], None]
    ) -> AbstractContextManager[None]:
        """Routes replies with ``correlation_id`` to ``collect`` while the block runs;
        later ones are dropped (not mistaken for direct messages). For primitives that
        expect several replies to one message (:func:`loom.collab.gather`)."""
        return self._inbox.collecting(correlation_id, collect)

    def subscription_info(self) -> list[dict[str, Any]]:
        """This agent's subscriptions as plain data (the dashboard, ``loom`` tooling):
        pattern, QoS, queue group, handler kind, and either the bus queue's counters
        (``transport="bus"``) or the JetStream consumer's name (``"jetstream"``)."""
        out: list[dict[str, Any]] = []
        runners: list[SubscriptionRunner | DurableConsumer] = list(self._runners.values())
        inbox = self._inbox.runner
        if inbox is not None:
            runners.append(inbox)
        for r in runners:
            if isinstance(r, DurableConsumer):
                out.append(
                    {
                        "transport": "jetstream",
                        "id": r.id,
                        "pattern": r.pattern,
                        "group": r.group,
                        "qos": "reliable",
                        "consumer": r.name,
                        "inbox": False,
                    }
                )
            else:
                stats = r.sub.stats()
                out.append(
                    {
                        "transport": "bus",
                        **vars(stats),
                        "dropped": dict(stats.dropped),
                        "inbox": r is inbox,
                    }
                )
        return out

    async def _stop(self, timeout: float | None) -> bool:
        runners = list(self._runners.values())
        self._runners.clear()
        ok = all(await asyncio.gather(*(r.stop(timeout) for r in runners)))
        return await self._inbox.stop(timeout) and ok

    def __repr__(self) -> str:
        return f"AgentContext(agent_id={self.agent_id!r})"

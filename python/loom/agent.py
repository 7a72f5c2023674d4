"""``Agent``: an event handler with an identity, topics and a context."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from loom._aio import resolve, stop_on_signals
from loom._core import Envelope
from loom.bus import QoS
from loom.context import AgentContext, BatchHandler, Handler
from loom.errors import AgentError, LoomError, ToolNotFound
from loom.runtime import Runtime

log = logging.getLogger("loom.agent")

Hook = Callable[[AgentContext], Awaitable[Any] | Any]


class Agent:
    """An agent: subscribes to ``topics`` and calls ``on_event(ctx, topic, event)``.

    Handlers run concurrently (at most ``max_concurrency`` at once per agent), so a
    handler can ``await ctx.request(...)``. A handler that raises is logged with the
    agent and event ids; the agent keeps running.

    Example:
        >>> async def on_event(ctx, topic, event):
        ...     await ctx.reply(event, payload={"echo": event.payload})
        >>> agent = Agent("echo", topics=["echo.>"], on_event=on_event)

    Args:
        agent_id: Unique within the runtime; the ``source`` of events it emits.
        topics: Subscription patterns (NATS syntax).
        tools: Tools this agent brings or needs: ``@tool`` functions or plain
            callables are registered in the runtime (any agent may call them); names
            are checked to exist.
        on_event: ``async def on_event(ctx, topic, event)``.
        config: Free-form settings, available as ``ctx.config``.
        on_batch: Instead of ``on_event``: ``async def on_batch(ctx, pattern, events)``
            called with every pending event at once (for throughput).
        on_start: Called with the context once subscribed.
        on_stop: Called with the context when stopping, after in-flight events finish.
        main: A long-running coroutine function ``main(ctx)``, restarted with backoff
            if it raises.
        qos: QoS of the topic subscriptions.
        capacity: Queue bound of each subscription (default per QoS).
        max_concurrency: Handlers running at once.
        group: Queue group of the topic subscriptions: agents in the same group share
            the events (each goes to one of them) instead of each getting a copy.
        runtime: The runtime to join (default: :meth:`Runtime.default`).
        address: The original API's bridge address. There is no bridge: agents join
            their runtime in-process, and processes meet over NATS (``[bus] nats``);
            a warning says so and the value is not used.
    """

    def __init__(
        self,
        agent_id: str,
        topics: Iterable[str] = (),
        tools: Iterable[Any] = (),
        on_event: Handler | None = None,
        config: Mapping[str, Any] | None = None,
        *,
        on_batch: BatchHandler | None = None,
        on_start: Hook | None = None,
        on_stop: Hook | None = None,
        main: Hook | None = None,
        qos: QoS = "reliable",
        capacity: int | None = None,
        max_concurrency: int = 16,
        group: str | None = None,
        runtime: Runtime | None = None,
        address: str | None = None,
    ) -> None:
        if not agent_id or not isinstance(agent_id, str):
            raise AgentError("agent_id must be a non-empty string")
        if on_event is not None and on_batch is not None:
            raise AgentError(f"agent {agent_id!r}: give on_event or on_batch, not both")
        if max_concurrency < 1:
            raise AgentError(f"agent {agent_id!r}: max_concurrency must be at least 1")
        from loom import _core

        if address is not None:
            warnings.warn(
                f"agent {agent_id!r}: Agent(address={address!r}) is not used: there is no "
                "bridge to connect to; agents run in the runtime's process and reach other "
                "processes through NATS ([bus] nats in loom.toml)",
                DeprecationWarning,
                stacklevel=2,
            )
        self.topics = list(topics)
        for t in self.topics:
            _core.validate_pattern(t)
        self.agent_id = agent_id
        #: Tool names, or ``@tool`` functions/plain callables registered on start.
        self.tools: list[Any] = list(tools)
        self.on_event = on_event
        self.on_batch = on_batch
        self.on_start = on_start
        self.on_stop = on_stop
        self.main = main
        self.qos: QoS = qos
        self.capacity = capacity
        self.max_concurrency = max_concurrency
        self.group = group
        self.runtime = runtime or Runtime.default()
        self.ctx = AgentContext(agent_id, self.runtime, config, max_concurrency=max_concurrency)
        self._running = False
        self._main_task: asyncio.Task[None] | None = None
        self._start_task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._running

    def subscription_info(self) -> list[dict[str, Any]]:
        """The agent's subscriptions (see :meth:`AgentContext.subscription_info`)."""
        return self.ctx.subscription_info()

    @property
    def inbox(self) -> str:
        """The topic replies and direct messages to this agent arrive on."""
        return self.ctx.inbox

    async def _direct(self, event: Envelope) -> None:
        if self.on_event is not None:
            await resolve(self.on_event(self.ctx, event.topic, event))

    async def start(self) -> None:
        """Subscribes to the topics and starts handling events."""
        if self._running:
            return
        await self.runtime.prepare()
        self.runtime.attach(self)
        try:
            if self.tools:
                await self._register_tools()
            self.ctx._start_inbox(self._direct if self.on_event else None)
            for pattern in self.topics:
                if self.on_batch is not None:
                    self.ctx.subscribe(
                        pattern,
                        on_batch=self.on_batch,
                        qos=self.qos,
                        capacity=self.capacity,
                        group=self.group,
                    )
                elif self.on_event is not None:
                    self.ctx.subscribe(
                        pattern,
                        self.on_event,
                        qos=self.qos,
                        capacity=self.capacity,
                        group=self.group,
                    )
            await self.ctx.subscriptions_ready()
            self._running = True
            if self.on_start is not None:
                await resolve(self.on_start(self.ctx))
            if self.runtime.durability is not None:
                # Runs this agent left unfinished (a crash, a kill -9) go on now.
                await self.runtime.durability.resume_agent(self.agent_id)
            if self.main is not None:
                main = self.main
                self._main_task = self.runtime.supervise(
                    f"{self.agent_id}.main", lambda: resolve(main(self.ctx))
                )
        except BaseException:
            await self.ctx._stop(0)
            self.runtime.detach(self)
            self._running = False
            raise
        log.info("agent %s started (topics: %s)", self.agent_id, ", ".join(self.topics) or "-")

    async def _register_tools(self) -> None:
        from loom.tools.python import adopt

        registry = await self.runtime.get_tools()
        for t in self.tools:
            try:
                adopt(registry, t)
            except ToolNotFound:
                raise
            except LoomError as exc:
                raise AgentError(f"agent {self.agent_id!r}: {exc}") from None

    async def stop(self, timeout: float | None = 10.0) -> None:
        """Stops intake, lets queued and in-flight events finish (up to ``timeout``
        seconds, then cancels them), runs ``on_stop``."""
        if not self._running:
            return
        self._running = False
        if self._main_task is not None:
            self._main_task.cancel()
            await asyncio.gather(self._main_task, return_exceptions=True)
            self._main_task = None
        finished = await self.ctx._stop(timeout)
        if not finished:
            log.warning("agent %s: in-flight events cancelled after %ss", self.agent_id, timeout)
        if self.on_stop is not None:
            try:
                await resolve(self.on_stop(self.ctx))
            except Exception:
                log.exception("agent %s: on_stop failed", self.agent_id)
        self.runtime.detach(self)
        log.info("agent %s stopped", self.agent_id)

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def _ctx(self) -> AgentContext:
        """The original Loom's name for :attr:`ctx`."""
        return self.ctx

    def run(self) -> None:
        """Runs the agent until SIGINT or SIGTERM, then stops it cleanly (blocking).

        Called on a running event loop (a script ``loom run`` executes in-process),
        it starts the agent on that loop and returns: the runtime keeps it running.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(run_until_signal([self]))
            return
        self._start_task = loop.create_task(self.start(), name=f"loom:{self.agent_id}.start")

    def __repr__(self) -> str:
        return f"Agent({self.agent_id!r}, topics={self.topics!r})"


async def run_until_signal(agents: Iterable[Agent], stop: asyncio.Event | None = None) -> None:
    """Starts ``agents``, waits for SIGINT/SIGTERM (or ``stop``), then stops their
    runtime(s) cleanly."""
    agents = list(agents)
    stop = stop or asyncio.Event()
    for a in agents:
        a.runtime.stop_requested = stop
    try:
        with stop_on_signals(stop):
            for a in agents:
                await a.start()
            await stop.wait()
    finally:
        runtimes = {id(a.runtime): a.runtime for a in agents}
        for rt in runtimes.values():
            await rt.stop()

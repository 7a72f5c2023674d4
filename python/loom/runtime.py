"""The runtime: the state of one set of agents (usually one per process).

It owns the bus, the project configuration, the tool registry, the supervised
background tasks and the shutdown hooks (LLM clients, tool processes, exporters), and
hands them down to what it hosts. Agents join a runtime; the runtime knows them only as
:class:`HostedAgent`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from loom._aio import resolve
from loom._host import ShutdownHook
from loom.bus import EventBus
from loom.config import load_project_config
from loom.errors import AgentError, ConfigError
from loom.telemetry import Telemetry

if TYPE_CHECKING:
    from loom.config import ProjectConfig
    from loom.durable import Durability
    from loom.kv import KeyValue, SqliteStore
    from loom.llm.state import LLMState
    from loom.nats.bridge import NatsBridge
    from loom.nats.jetstream import JetStreamLink
    from loom.tools.registry import ToolRegistry

log = logging.getLogger("loom.runtime")

# ``from loom.runtime import load_project_config`` is how the original docs import it.
__all__ = ["HostedAgent", "Runtime", "load_project_config"]


class HostedAgent(Protocol):
    """What the runtime needs of an agent: its id, and to stop it."""

    @property
    def agent_id(self) -> str: ...

    @property
    def inbox(self) -> str:
        """The topic its direct messages and replies arrive on."""
        ...

    async def stop(self, timeout: float | None = ...) -> None: ...

    def subscription_info(self) -> list[dict[str, Any]]:
        """Its subscriptions as plain data (pattern, QoS, group, counters)."""
        ...


class Runtime:
    """Bus, agents and lifecycle of one process.

    Agents created without an explicit ``runtime`` join :meth:`Runtime.default`.
    """

    _default: Runtime | None = None

    def __init__(
        self, project: ProjectConfig | None = None, *, bus: EventBus | None = None
    ) -> None:
        self.project = project
        self.bus = bus or EventBus()
        #: Running agents by id (see :meth:`attach`).
        self.agents: dict[str, HostedAgent] = {}
        #: Reliable subscriptions' stream and consumers, when ``[bus] nats`` is set
        #: (and ``[bus.jetstream]`` not disabled).
        self.jetstream: JetStreamLink | None = None
        #: The link to ``[bus] nats``, once joined (:meth:`prepare`).
        self.nats_bridge: NatsBridge | None = None
        self._hooks: list[ShutdownHook] = []
        self._supervised: set[asyncio.Task[None]] = set()
        #: The tool registry, built on first use (:meth:`get_tools`).
        self.tools: ToolRegistry | None = None
        self._tools_lock: asyncio.Lock | None = None
        #: The provider ``"auto"`` resolves to (``loom run --provider``); None = detect.
        self.llm_provider: str | None = None
        self.stopping = False
        #: A problem with the project the default runtime discovered; raised by
        #: :meth:`prepare` (the first ``Agent.start()``), not when agents are created.
        self.project_error: ConfigError | None = None
        self._prepared: asyncio.Future[None] | None = None
        #: Set by :meth:`request_stop`; ``loom run`` waits on it.
        self.stop_requested: asyncio.Event | None = None
        #: The key-value store behind :meth:`kv`, opened on first use.
        self.kv_store: SqliteStore | None = None
        #: Tracing state (spans recorded?, content capture, tracer), handed to agents.
        self.telemetry = Telemetry()
        #: The journal of durable runs, when the project has ``[durability]``.
        self.durability: Durability | None = None

    @cached_property
    def llm_state(self) -> LLMState:
        """LLM usage totals, budgets, limiters and local model servers of this runtime."""
        from loom.llm.state import LLMState

        return LLMState()

    # -- default runtime -----------------------------------------------------------

    @classmethod
    def default(cls) -> Runtime:
        """The process-wide runtime (created on first use). It loads the project the way
        ``loom run`` would (:func:`loom.config.discover_project`: ``$LOOM_PROJECT``, else
        the nearest ``loom.toml`` upward), so a script in a project directory gets its
        ``[llm.*]``, ``[workspace]``, ``[tools]``, ``[mcp.*]`` and ``[bus]``."""
        if cls._default is None or cls._default.bus.closed:
            from loom.config import discover_project

            rt = cls()
            try:
                rt.project = discover_project()
            except ConfigError as exc:
                rt.project_error = exc
            cls._default = rt
        return cls._default

    @classmethod
    def set_default(cls, runtime: Runtime | None) -> None:
        """Makes ``runtime`` the one new agents join by default."""
        cls._default = runtime

    async def prepare(self) -> None:
        """Project-level start-up, done once before the first agent starts: the whole
        project is checked (:func:`loom.project_check.check_project`), the tool registry
        is built when the project configures tools (so a mistake is reported now, not at
        the first call), and the bus joins ``[bus] nats``.

        Raises:
            ConfigError: the project is invalid (file, line and key).
            BusError: the NATS server cannot be reached.
        """
        if self.project_error is not None:
            raise self.project_error
        if self._prepared is not None:
            await asyncio.shield(self._prepared)
            return
        self._prepared = asyncio.get_running_loop().create_future()
        try:
            project = self.project
            if project is not None:
                from loom.project_check import check_project, configures_tools

                check_project(project)
                if configures_tools(project):
                    await self.get_tools()
                if project.bus.get("nats"):
                    from loom.nats.join import join_project_bus

                    self.nats_bridge = await join_project_bus(self, project)
                if project.durability or "durability" in project.raw:
                    await self._open_durability(project)
        except BaseException as exc:
            # Whoever is waiting gets the error; the next start tries again (a NATS
            # server may be up by then; a bad file fails the same way).
            failed, self._prepared = self._prepared, None
            failed.set_exception(exc)
            failed.exception()  # retrieved: waiters get it from their await
            raise
        self._prepared.set_result(None)

    async def _open_durability(self, project: ProjectConfig) -> None:
        from loom.durable import open_durability

        nats = self.jetstream.nc if self.jetstream is not None else None
        self.durability = await open_durability(project, self.telemetry, nats)
        if self.durability is not None:
            self.on_shutdown(self.durability.close)
            log.info("durable runs: journal %s", self.durability.store.where)

    # -- agents --------------------------------------------------------------------

    def attach(self, agent: HostedAgent) -> None:
        """Records a starting agent (it is stopped with the runtime).

        Raises:
            AgentError: another agent with the same id is running here.
        """
        if agent.agent_id in self.agents and self.agents[agent.agent_id] is not agent:
            raise AgentError(f"an agent with id {agent.agent_id!r} is already running")
        self.agents[agent.agent_id] = agent

    def inbox_of(self, agent_id: str | None) -> str | None:
        """The inbox of a running agent of this runtime (``None``: no such agent)."""
        agent = self.agents.get(agent_id) if agent_id else None
        return agent.inbox if agent is not None else None

    def describe_agents(self) -> list[dict[str, Any]]:
        """The agents and their subscriptions (patterns, QoS, groups), for the dashboard
        and for other processes asking who is on the bus (``loom.nats.presence``)."""
        return [
            {
                "id": agent_id,
                "subscriptions": [
                    {k: s.get(k) for k in ("pattern", "qos", "group", "transport", "inbox")}
                    for s in agent.subscription_info()
                ],
            }
            for agent_id, agent in sorted(self.agents.items())
        ]

    def detach(self, agent: HostedAgent) -> None:
        """Forgets a stopped agent."""
        if self.agents.get(agent.agent_id) is agent:
            del self.agents[agent.agent_id]

    # -- hooks ---------------------------------------------------------------------

    def on_shutdown(self, hook: ShutdownHook) -> None:
        """Registers ``hook`` to run (once, last registered first) when the runtime
        stops."""
        self._hooks.append(hook)

    def outgoing_headers(self, headers: Mapping[str, str] | None) -> dict[str, str] | None:
        """Headers for an outgoing event: the caller's, plus the current trace context
        (W3C ``traceparent``) when tracing."""
        if not self.telemetry.active:
            return dict(headers) if headers else None
        from loom.telemetry.agent_spans import inject_context

        out = dict(headers) if headers else {}
        inject_context(out)
        return out or None

    # -- supervision ---------------------------------------------------------------

    def supervise(
        self,
        name: str,
        factory: Callable[[], Awaitable[Any]],
        *,
        initial_backoff: float | None = None,
        max_backoff: float | None = None,
    ) -> asyncio.Task[None]:
        """Runs ``factory()`` as a task, restarting it with exponential backoff when it
        raises. It ends when the coroutine returns or the runtime stops."""
        spec = self.project.runtime if self.project else None
        first = initial_backoff or (spec.restart_backoff_initial if spec else 0.5)
        cap = max_backoff or (spec.restart_backoff_max if spec else 30.0)

        async def run() -> None:
            delay = first
            while not self.stopping:
                try:
                    await factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s crashed; restarting in %.1fs", name, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, cap)

        task = asyncio.get_running_loop().create_task(run(), name=f"loom:{name}")
        self._supervised.add(task)
        task.add_done_callback(self._supervised.discard)
        return task

    # -- tools seam ----------------------------------------------------------------

    @property
    def sandbox_status(self) -> dict[str, Any] | None:
        """What the native sandbox enforces here, once the native tools are loaded."""
        return self.tools.sandbox_status if self.tools is not None else None

    async def get_tools(self) -> ToolRegistry:
        """The tool registry, built from the project on first use (MCP servers are
        started then)."""
        if self.tools is not None:
            return self.tools
        if self._tools_lock is None:
            self._tools_lock = asyncio.Lock()
        async with self._tools_lock:
            if self.tools is None:
                from loom.tools.setup import build_registry

                self.tools = await build_registry(self)
            return self.tools

    # -- key-value store -----------------------------------------------------------

    def kv(self, bucket: str = "default") -> KeyValue:
        """A bucket of the runtime's key-value store (``[kv]``: the project's
        ``.loom/kv.sqlite3`` by default, in memory without a project), closed when the
        runtime stops. See docs/kv.md."""
        if self.kv_store is None:
            from loom.kv import open_store

            self.kv_store = open_store(self.project)
            self.on_shutdown(self.kv_store.close)
        return self.kv_store.bucket(bucket)

    # -- shutdown ------------------------------------------------------------------

    def request_stop(self) -> None:
        """Asks whoever runs this runtime (``loom run``, ``run_until_signal``) to stop
        it cleanly, as SIGINT would: e.g. an interactive agent whose user left."""
        if self.stop_requested is not None:
            self.stop_requested.set()

    async def stop(self, timeout: float | None = None) -> None:
        """Stops every agent (letting in-flight events finish for up to ``timeout``
        seconds), cancels supervised tasks, runs shutdown hooks, closes the bus."""
        if self.stopping:
            return
        self.stopping = True
        if timeout is None:
            timeout = self.project.runtime.shutdown_timeout if self.project else 10.0
        agents = list(self.agents.values())
        await asyncio.gather(*(a.stop(timeout=timeout) for a in agents), return_exceptions=True)
        for task in list(self._supervised):
            task.cancel()
        if self._supervised:
            await asyncio.wait(list(self._supervised), timeout=timeout)
        while self._hooks:
            hook = self._hooks.pop()
            try:
                await asyncio.wait_for(resolve(hook()), timeout)
            except Exception:
                log.exception("shutdown hook %r failed", hook)
        self.bus.close()
        if Runtime._default is self:
            Runtime._default = None

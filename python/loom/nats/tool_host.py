"""Serving this process's tools to others over NATS: a tool host (docs/tool-hosts.md).

With ``[tools] export = ["fs:*", "system:shell"]`` and ``[bus] nats``, :class:`ToolHost`
subscribes, for each registered tool the patterns match, to ``_loom.tool.call.<tool>``
and ``_loom.tool.on.<host>.<tool>`` in the queue group ``loom-tools`` — so several hosts
exporting a tool share its calls, and ``tool@host`` reaches the hosts of one name. The
set follows the registry (an agent's tools, an MCP server's changes).

Each request is answered by the host's own ``registry.call``: the owner's sandbox,
approval rules and approver, and timeouts (the caller's timeout, capped at the owner's
``[tools] timeout``) apply there, under the caller's trace (``traceparent`` in the NATS
headers) and with its call id and headers. Nothing in a request names a rule or a
sandbox setting; a field the protocol does not define is refused, and a tool that is
not exported is never subscribed to (and refused if asked for anyway). Errors go back as
their type and fields (:mod:`loom.nats.tool_wire`).

:func:`start_tool_services` is what :func:`loom.nats.connect` runs after the bridge: the
remote-tools client for every runtime, and a host when the project exports tools.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loom.errors import ToolArgumentsInvalid, ToolError, ToolFailed, ToolNotFound
from loom.nats import tool_wire as wire
from loom.nats.bridge import BusHost
from loom.nats.remote_tools import RemoteToolsClient
from loom.nats.roundtrip import drain, round_trip
from loom.telemetry.state import Telemetry
from loom.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

log = logging.getLogger("loom.nats")

#: Calls one host runs at once; more wait (heartbeats keep their callers waiting).
MAX_IN_FLIGHT = 256
#: Seconds in-flight calls get to finish when the host stops.
_STOP_GRACE = 5.0
_MAX_TEXT = 256


@runtime_checkable
class ToolsRuntime(BusHost, Protocol):
    """What the tool services need of a runtime: its bus and shutdown hook (the
    bridge's :class:`BusHost`), its tracing state and its tool registry."""

    @property
    def telemetry(self) -> Telemetry: ...

    async def get_tools(self) -> ToolRegistry: ...


@dataclass(frozen=True)
class RemoteCaller:
    """The context a remote call runs with on the host (what ``ctx`` a Python tool
    receives): ``agent_id`` is ``<agent>@<calling process>`` as the caller says."""

    agent_id: str
    runtime: ToolsRuntime
    telemetry: Telemetry


async def start_tool_services(host: BusHost, nc: Client, *, name: str | None) -> None:
    """Gives ``host``'s registry the remote tools of NATS and, with ``[tools] export``,
    serves its own; both stop with the host. ``name``: this process's name on NATS
    (its host name, made a subject token)."""
    if not isinstance(host, ToolsRuntime):
        return
    registry = await host.get_tools()
    instance = uuid.uuid4().hex[:16]
    host_name = wire.host_token(name or "loom")
    client = RemoteToolsClient(nc, caller=host_name, instance=instance, telemetry=host.telemetry)
    await client.start()
    if registry.use_remote:
        await client.discover(0.5)
    registry.remote = client
    host.on_shutdown(client.close)
    if registry.export:
        server = ToolHost(host, registry, nc, name=host_name, instance=instance)
        await server.start()
        host.on_shutdown(server.close)


class ToolHost:
    """Serves the exported tools of one registry (see the module documentation)."""

    def __init__(
        self,
        runtime: ToolsRuntime,
        registry: ToolRegistry,
        nc: Client,
        *,
        name: str,
        instance: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.registry = registry
        self.nc = nc
        #: The host name callers pin with ``tool@name``.
        self.name = name
        self.instance = instance or uuid.uuid4().hex[:16]
        #: Calls answered so far.
        self.served = 0
        self._subs: dict[str, list[Subscription]] = {}
        self._control: list[Subscription] = []
        self._inflight: dict[int, tuple[str, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._sync_lock = asyncio.Lock()
        self._sync_task: asyncio.Task[None] | None = None
        self._dirty = False
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self._sync()
        self._control.append(await self.nc.subscribe(wire.DISCOVER, cb=self._on_discover))
        self.registry.listeners.append(self._registry_changed)
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="loom:tool-host")
        await self._announce()
        await round_trip(self.nc)
        log.info(
            "tool host %s: serving %s", self.name, ", ".join(sorted(self._subs)) or "(nothing yet)"
        )

    async def close(self) -> None:
        """Stops taking calls, lets running ones finish (briefly), says goodbye."""
        if self._closed:
            return
        self._closed = True
        if self._registry_changed in self.registry.listeners:
            self.registry.listeners.remove(self._registry_changed)
        for task in (self._ticker, self._sync_task):
            if task is not None:
                task.cancel()
        if self.nc.is_closed:
            return
        # Drained, not just unsubscribed: calls already on their way here are answered.
        for sub in [*self._control, *(s for subs in self._subs.values() for s in subs)]:
            try:
                await drain(self.nc, sub)
            except Exception as exc:
                log.debug("tool host: unsubscribe failed: %s", exc)
        self._subs.clear()
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=_STOP_GRACE)
            for task in late:
                task.cancel()  # answered "host stopping" by _serve
            await asyncio.gather(*late, return_exceptions=True)
        try:
            await self._announce(bye=True)
            await round_trip(self.nc, timeout=2)
        except Exception as exc:
            log.debug("tool host: goodbye not sent: %s", exc)

    # -- what is exported ----------------------------------------------------------------

    def exported(self) -> list[str]:
        """Names of the registered tools ``[tools] export`` matches, sorted."""
        return [s.name for s in self.registry.local_specs() if self.registry.exported(s.name)]

    def catalog(self, *, bye: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"host": self.name, "instance": self.instance}
        if bye:
            body["bye"] = True
            return body
        body["tools"] = [
            {
                "name": s.name,
                "description": s.description,
                "parameters": s.parameters,
                "requires_approval": s.requires_approval,
            }
            for s in self.registry.local_specs()
            if s.name in self._subs
        ]
        return body

    def _registry_changed(self) -> None:
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._dirty = True
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = loop.create_task(self._resync())

    async def _resync(self) -> None:
        # Changes made while a sync runs are picked up by the next round.
        while self._dirty and not self._closed:
            self._dirty = False
            try:
                if await self._sync():
                    await self._announce()
            except Exception as exc:  # disconnected or closing: the next change retries
                log.warning("tool host %s: could not follow the registry: %r", self.name, exc)

    async def _sync(self) -> bool:
        """Subscribes to newly exported tools, unsubscribes from removed ones; returns
        whether anything changed."""
        async with self._sync_lock:
            wanted = set(self.exported())
            changed = False
            for name in sorted(wanted - set(self._subs)):
                self._subs[name] = [
                    await self.nc.subscribe(subject, queue=wire.QUEUE, cb=self._receiver(name))
                    for subject in (
                        wire.call_subject(name),
                        wire.call_subject(name, self.name),
                    )
                ]
                changed = True
            for name in sorted(set(self._subs) - wanted):
                for sub in self._subs.pop(name):
                    # A call already on its way still gets its answer (ToolNotFound).
                    await drain(self.nc, sub)
                changed = True
            if changed:
                await round_trip(self.nc)
            return changed

    def _catalog_data(self, *, bye: bool = False) -> bytes:
        """The catalog as JSON within NATS' message size: schemas, then descriptions
        are left out of a catalog too large (calls are unaffected; listings show less)."""
        from pydantic_core import to_json

        body = self.catalog(bye=bye)
        data = to_json(body)
        if bye:
            return data
        for drop in ("parameters", "description"):
            if len(data) <= self.nc.max_payload:
                break
            for entry in body["tools"]:
                entry.pop(drop, None)
            data = to_json(body)
        while len(data) > self.nc.max_payload and body["tools"]:
            del body["tools"][len(body["tools"]) // 2 :]
            data = to_json(body)
        return data

    async def _announce(self, *, bye: bool = False) -> None:
        await self.nc.publish(wire.ANNOUNCE, self._catalog_data(bye=bye))

    async def _on_discover(self, msg: Msg) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, self._catalog_data())

    async def _tick(self) -> None:
        """Heartbeats for calls still running; the catalog now and then."""
        loop = asyncio.get_running_loop()
        beat = {wire.STATUS: "working", wire.HOST: self.name}
        next_announce = loop.time() + wire.ANNOUNCE_EVERY
        while True:
            await asyncio.sleep(wire.HEARTBEAT)
            now = loop.time()
            try:
                for reply, started in list(self._inflight.values()):
                    if now - started >= wire.HEARTBEAT / 2:
                        await self.nc.publish(reply, b"", headers=beat)
                if now >= next_announce:
                    next_announce = now + wire.ANNOUNCE_EVERY
                    await self._announce()
            except Exception as exc:  # disconnected: the client reconnects by itself
                log.debug("tool host: heartbeat not sent: %s", exc)

    # -- serving -----------------------------------------------------------------------

    def _receiver(self, name: str) -> Any:
        async def receive(msg: Msg) -> None:
            if not msg.reply:
                return  # nobody to answer
            key = next(self._ids)
            self._inflight[key] = (msg.reply, asyncio.get_running_loop().time())
            task = asyncio.get_running_loop().create_task(self._serve(name, msg, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return receive

    async def _serve(self, name: str, msg: Msg, key: int) -> None:
        try:
            async with self._slots:
                reply = await self._answer(name, msg)
        except asyncio.CancelledError:
            reply = self._error(ToolFailed(name, f"tool host {self.name} is stopping"))
            await self._send(msg.reply, reply)
            raise
        finally:
            self._inflight.pop(key, None)
        await self._send(msg.reply, reply)
        self.served += 1

    async def _send(self, reply: str, data: bytes) -> None:
        try:
            await self.nc.publish(reply, data)
        except Exception as exc:
            log.warning("tool host %s: could not send a reply: %r", self.name, exc)

    def _error(self, exc: ToolError) -> bytes:
        from pydantic_core import to_json

        return to_json({"host": self.name, "error": wire.error_data(exc)})

    async def _answer(self, name: str, msg: Msg) -> bytes:
        from pydantic_core import to_json

        try:
            req = _request(name, msg.data)
            # Exported and local: a tool this process lost is never fetched elsewhere.
            if not self.registry.exported(name) or self.registry.local(name) is None:
                raise ToolNotFound(name, f"tool host {self.name} does not export {name!r}")
            limit = self.registry.default_timeout
            timeout = min(req.timeout, limit) if req.timeout else limit
            ctx = RemoteCaller(f"{req.agent}@{req.caller}", self.runtime, self.runtime.telemetry)
            traced = self.runtime.telemetry.active and "traceparent" in (msg.headers or {})
            with _continued(msg.headers if traced else None):
                result = await self.registry.call(
                    ctx, name, req.args, timeout=timeout, call_id=req.call_id, headers=req.headers
                )
            try:
                data = to_json({"host": self.name, "result": result})
            except Exception as exc:
                raise ToolFailed(name, f"the result is not JSON: {exc}") from None
            if len(data) > self.nc.max_payload:
                raise ToolFailed(
                    name,
                    f"the result is {len(data)} bytes as JSON, more than the "
                    f"{self.nc.max_payload} bytes NATS carries in one message (the "
                    "server's max_payload); ask for less (e.g. fs:read_file's max_bytes)",
                )
            return data
        except ToolError as exc:
            return self._error(exc)
        except Exception as exc:  # a bug here must still answer the caller
            log.exception("tool host %s: serving %s failed", self.name, name)
            return self._error(ToolFailed(name, f"the tool host failed: {type(exc).__name__}"))


@contextmanager
def _continued(headers: dict[str, str] | None) -> Iterator[None]:
    """Makes the caller's span (W3C ``traceparent`` in ``headers``) the current one, so
    the host's ``execute_tool`` span is its child."""
    if headers is None:
        yield
        return
    from opentelemetry import context
    from opentelemetry.propagate import extract

    token = context.attach(extract(headers))
    try:
        yield
    finally:
        context.detach(token)


@dataclass(frozen=True)
class _Request:
    args: dict[str, Any]
    timeout: float | None
    call_id: str | None
    agent: str
    caller: str
    headers: dict[str, str]


def _request(tool: str, data: bytes) -> _Request:
    """A request body, checked (every field; unknown ones refused).

    Raises:
        ToolArgumentsInvalid: malformed.
    """

    def bad(why: str) -> ToolArgumentsInvalid:
        return ToolArgumentsInvalid(tool, f"malformed remote tool request: {why}")

    try:
        body = json.loads(data)
    except ValueError:
        raise bad("the body is not JSON") from None
    if not isinstance(body, dict):
        raise bad("the body is not a JSON object")
    unknown = sorted(set(body) - wire.REQUEST_KEYS)
    if unknown:
        raise bad(f"unknown field(s) {', '.join(map(repr, unknown))}")
    if body.get("v") != wire.VERSION:
        raise bad(f"protocol version {body.get('v')!r}; this host speaks {wire.VERSION}")
    args = body.get("args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise bad("args must be an object")
    timeout = body.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise bad("timeout must be a positive number of seconds")
    headers = body.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise bad("headers must map strings to strings")
    texts: dict[str, str | None] = {}
    for key in ("call_id", "agent", "caller"):
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > _MAX_TEXT):
            raise bad(f"{key} must be a string of at most {_MAX_TEXT} characters")
        texts[key] = value
    return _Request(
        args,
        float(timeout) if timeout is not None else None,
        texts["call_id"] or None,
        texts["agent"] or "?",
        texts["caller"] or "?",
        headers,
    )

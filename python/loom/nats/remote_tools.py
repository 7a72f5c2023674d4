"""Calling the tools other processes export (docs/tool-hosts.md).

:class:`RemoteToolsClient` is what a runtime joined to NATS gives its registry as
``registry.remote``: a name the registry does not have is looked up here, and the call
goes out as one NATS message (``_loom.tool.call.<tool>``, or ``_loom.tool.on.<host>.
<tool>`` for ``name@host``) through the caller's registry — so its span, argument checks,
approval rules and timeout apply first, and ``ctx.tool`` is unchanged.

The reply comes back on one wildcard inbox subscription per client (a token per call),
the same scheme the NATS client uses for requests, with two additions: heartbeats (a
host sends one every second while a call runs, so a call waits as long as its timeout
for a working host but gives up :data:`~loom.nats.tool_wire.SILENCE` seconds after a
host went silent — killed, partitioned), and NATS' "no responders" status, which is
:class:`~loom.errors.ToolNotFound` at once.

Names this runtime lacks go out only once :meth:`RemoteToolsClient.discover` ran
(``[tools] remote = true`` runs it when the runtime joins NATS); ``tool@host`` always
does. Discovery is otherwise for listing (``ctx.tools()``, ``loom tools``): catalogs
arrive from a ``_loom.tool.discover`` request and from hosts' announcements. A call
never waits for it: the subject alone finds the hosts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loom.errors import (
    ToolArgumentsInvalid,
    ToolFailed,
    ToolNotFound,
    ToolTimeout,
)
from loom.nats import tool_wire as wire
from loom.telemetry.state import Telemetry
from loom.tools.registry import DEFAULT_TIMEOUT, current_call
from loom.tools.spec import NAME_RE, ToolSpec, openai_name

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

log = logging.getLogger("loom.nats")

#: Seconds a caller waits beyond the call's timeout for the host's own answer (the host
#: allows its tools up to 1 s of grace, then answers ToolTimeout).
_REPLY_GRACE = 1.5


@dataclass
class _Pending:
    """One call waiting for its reply."""

    done: asyncio.Future[Msg | None]  # None: no host serves the subject
    seen: float  # loop time of the request or the last heartbeat
    host: str | None = None


@dataclass
class _Catalog:
    """What one host process announced."""

    host: str
    tools: dict[str, ToolSpec]
    seen: float = field(default_factory=time.monotonic)


@dataclass
class _Discovery:
    token: str
    arrived: asyncio.Event
    replies: int = 0
    no_hosts: bool = False


class RemoteTool:
    """A tool of other processes, as the registry calls it: any host exporting it, or
    the hosts named ``host``."""

    #: The host enforces the timeout and answers; the caller waits a little longer.
    timeout_grace = _REPLY_GRACE + 0.5

    def __init__(self, client: RemoteToolsClient, spec: ToolSpec, host: str | None) -> None:
        self.client = client
        self.spec = spec
        self.host = host

    async def invoke(self, ctx: Any, args: dict[str, Any], timeout: float | None) -> Any:
        return await self.client.call(self.spec.name, self.host, ctx, args, timeout)

    def __repr__(self) -> str:
        at = f"@{self.host}" if self.host else ""
        return f"RemoteTool({self.spec.name!r}{at})"


class RemoteToolsClient:
    """The remote-tools side of one runtime (see the module documentation); satisfies
    :class:`loom.tools.registry.RemoteTools`."""

    def __init__(
        self, nc: Client, *, caller: str, instance: str, telemetry: Telemetry | None = None
    ) -> None:
        self.nc = nc
        #: This process's name, sent with each call (the host shows ``agent@caller``).
        self.caller = caller
        #: This process's id: its own announcements are skipped.
        self.instance = instance
        self.telemetry = telemetry or Telemetry()
        self._inbox = ""
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._catalogs: dict[str, _Catalog] = {}
        self._merged: dict[str, ToolSpec] | None = None
        self._subs: list[Subscription] = []
        self._discovery: _Discovery | None = None
        #: Whether names this runtime lacks go to NATS (else only ``tool@host`` does).
        self.enabled = False
        self.calls = 0

    async def start(self) -> None:
        """Subscribes to its replies (under ``_INBOX.``, which every Loom connection
        may use). Nothing on ``_loom.tool.`` until :meth:`discover`: a runtime that does
        not use remote tools needs no permission for them."""
        self._inbox = self.nc.new_inbox()
        self._subs.append(await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_inbox))

    async def close(self) -> None:
        for sub in self._subs:
            if not self.nc.is_closed:
                try:
                    await sub.unsubscribe()
                except Exception as exc:  # the connection may be gone already
                    log.debug("remote tools: unsubscribe failed: %s", exc)
        self._subs.clear()
        for pending in self._pending.values():
            if not pending.done.done():
                pending.done.cancel()

    # -- discovery ---------------------------------------------------------------------

    async def discover(self, wait: float = 1.0, settle: float = 0.05) -> int:
        """Uses remote tools from now on (``[tools] remote = true`` does it at start):
        follows the hosts' announcements and asks every host for its catalog; returns
        when ``settle`` seconds pass without a new one, when NATS says no host listens,
        or after ``wait`` seconds. Returns the number of catalogs received."""
        if not self.enabled:
            self.enabled = True
            self._subs.append(await self.nc.subscribe(wire.ANNOUNCE, cb=self._on_announce))
        token = f"d{next(self._ids)}"
        found = self._discovery = _Discovery(token, asyncio.Event())
        await self.nc.publish(wire.DISCOVER, b"", reply=f"{self._inbox}.{token}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            while not found.no_hosts:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(
                        found.arrived.wait(), min(left, settle) if found.replies else left
                    )
                except (asyncio.TimeoutError, TimeoutError):
                    break
                found.arrived.clear()
        finally:
            if self._discovery is found:
                self._discovery = None
        return found.replies

    async def _on_announce(self, msg: Msg) -> None:
        self._take_catalog(msg.data)

    def _take_catalog(self, data: bytes) -> bool:
        try:
            body = json.loads(data)
            instance, host = str(body["instance"]), str(body["host"])
        except (ValueError, TypeError, KeyError) as exc:
            log.debug("remote tools: ignoring a malformed catalog: %s", exc)
            return False
        if instance == self.instance:
            return False
        self._merged = None
        if body.get("bye"):
            self._catalogs.pop(instance, None)
            log.info("tool host %s left", host)
            return True
        tools: dict[str, ToolSpec] = {}
        for entry in body.get("tools") or []:
            try:
                spec = ToolSpec.model_validate(
                    {
                        "name": entry["name"],
                        "description": str(entry.get("description") or ""),
                        "parameters": entry.get("parameters") or {"type": "object"},
                        "requires_approval": bool(entry.get("requires_approval")),
                        "source": "remote",
                        "hosts": (host,),
                    }
                )
            except (TypeError, KeyError, ValueError) as exc:
                log.debug("remote tools: ignoring a tool of %s: %s", host, exc)
                continue
            if NAME_RE.match(spec.name):
                tools[spec.name] = spec
        if instance not in self._catalogs:
            log.info("tool host %s: %d tool(s)", host, len(tools))
        self._catalogs[instance] = _Catalog(host, tools)
        return True

    def _known(self) -> dict[str, ToolSpec]:
        """Announced tools merged by name (``hosts``: every host serving it)."""
        now = time.monotonic()
        stale = [i for i, c in self._catalogs.items() if now - c.seen > 3 * wire.ANNOUNCE_EVERY]
        for instance in stale:
            del self._catalogs[instance]
            self._merged = None
        if self._merged is None:
            merged: dict[str, ToolSpec] = {}
            for cat in sorted(self._catalogs.values(), key=lambda c: c.host):
                for name, spec in cat.tools.items():
                    have = merged.get(name)
                    if have is None:
                        merged[name] = spec
                    elif cat.host not in have.hosts:
                        merged[name] = have.model_copy(
                            update={
                                "hosts": (*have.hosts, cat.host),
                                "requires_approval": have.requires_approval
                                or spec.requires_approval,
                            }
                        )
            self._merged = merged
        return self._merged

    def specs(self) -> list[ToolSpec]:
        return [spec for _, spec in sorted(self._known().items())]

    def hosts_of(self, tool: str) -> tuple[str, ...]:
        """The hosts known to export ``tool``."""
        spec = self._known().get(tool)
        return spec.hosts if spec else ()

    def _forget(self, tool: str, host: str | None) -> None:
        """No host answered for ``tool`` (at ``host``): drop it from the catalogs."""
        for cat in self._catalogs.values():
            if host is None or cat.host == host:
                if cat.tools.pop(tool, None) is not None:
                    self._merged = None

    # -- lookup ------------------------------------------------------------------------

    def lookup(self, name: str, *, known_only: bool) -> RemoteTool | None:
        known = self._known()
        parsed = split_name(name, known)
        if parsed is None:
            return None
        tool, host = parsed
        if host is None and not self.enabled:
            return None
        spec = known.get(tool)
        if known_only and (spec is None or (host is not None and host not in spec.hosts)):
            return None
        if spec is None:
            spec = ToolSpec(name=tool, source="remote", hosts=(host,) if host else ())
        return RemoteTool(self, spec, host)

    # -- calling -----------------------------------------------------------------------

    async def call(
        self, tool: str, host: str | None, ctx: Any, args: dict[str, Any], timeout: float | None
    ) -> Any:
        """Sends one call and waits for the host's answer (see the module docs).

        Raises:
            ToolNotFound: no host exports ``tool`` (at ``host``).
            ToolArgumentsInvalid: the request is larger than NATS allows.
            ToolTimeout: no answer within the timeout.
            ToolFailed: the host went silent, or the connection is closed.
            ToolError: whatever the host's registry raised, rebuilt.
        """
        from pydantic_core import to_json

        timeout = timeout or DEFAULT_TIMEOUT
        current = current_call()
        body = {
            "v": wire.VERSION,
            "args": args,
            "timeout": timeout,
            "call_id": current.call_id if current else None,
            "agent": str(getattr(ctx, "agent_id", "?")),
            "caller": self.caller,
            "headers": dict(current.headers) if current else {},
        }
        try:
            data = to_json(body)
        except Exception as exc:
            raise ToolArgumentsInvalid(tool, f"the arguments are not JSON: {exc}") from None
        headers: dict[str, str] | None = None
        if self.telemetry.active:
            from loom.telemetry.agent_spans import inject_context

            headers = {}
            inject_context(headers)  # the caller's execute_tool span becomes the parent
            headers = headers or None
        size, limit = len(data) + wire.headers_size(headers), self.nc.max_payload
        if size > limit:
            raise ToolArgumentsInvalid(
                tool,
                f"the request is {size} bytes as JSON, more than the {limit} bytes NATS "
                "carries in one message (the server's max_payload)",
            )
        loop = asyncio.get_running_loop()
        token = str(next(self._ids))  # digits only: discovery tokens start with "d"
        pending = _Pending(loop.create_future(), loop.time())
        self._pending[token] = pending
        self.calls += 1
        try:
            try:
                await self.nc.publish(
                    wire.call_subject(tool, host),
                    data,
                    reply=f"{self._inbox}.{token}",
                    headers=headers,
                )
            except Exception as exc:
                raise ToolFailed(tool, f"cannot send the call over NATS: {exc!r}") from None
            msg = await self._wait(tool, host, pending, timeout)
        finally:
            del self._pending[token]
        if msg is None:
            self._forget(tool, host)
            if host is None:
                reason = (
                    f"no tool named {tool!r} is registered here, and no tool host on NATS "
                    "exports it"
                )
            else:
                others = [h for h in self.hosts_of(tool) if h != host]
                hint = f" (hosts exporting it: {', '.join(others)})" if others else ""
                reason = f"no tool host named {host!r} on NATS exports {tool!r}{hint}"
            raise ToolNotFound(tool, reason)
        return self._result(tool, msg)

    async def _wait(
        self, tool: str, host: str | None, pending: _Pending, timeout: float
    ) -> Msg | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout + _REPLY_GRACE
        while True:
            now = loop.time()
            left = deadline - now
            if left <= 0:
                where = pending.host or host or "the host"
                raise ToolTimeout(tool, f"no answer from {where} within {timeout}s")
            quiet = pending.seen + wire.SILENCE - now
            if quiet <= 0:
                where = f"tool host {pending.host or host}" if pending.host or host else "the host"
                raise ToolFailed(
                    tool,
                    f"{where} stopped answering ({wire.SILENCE}s without a heartbeat): it "
                    "stopped or lost its NATS connection; the call may or may not have run",
                )
            done, _ = await asyncio.wait((pending.done,), timeout=min(left, quiet))
            if done:
                return pending.done.result()

    def _result(self, tool: str, msg: Msg) -> Any:
        try:
            body = json.loads(msg.data)
            if not isinstance(body, dict):
                raise TypeError(type(body).__name__)
        except (ValueError, TypeError) as exc:
            raise ToolFailed(tool, f"undecodable reply from the tool host: {exc}") from None
        host = body.get("host")
        if self.telemetry.active and isinstance(host, str):
            from opentelemetry import trace

            trace.get_current_span().set_attribute("loom.tool.host", host)
        if "error" in body:
            raise wire.error_from(tool, body["error"], host if isinstance(host, str) else None)
        return body.get("result")

    async def _on_inbox(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox) + 1 :]
        headers = msg.headers or {}
        found = self._discovery
        if found is not None and token == found.token:
            if headers.get("Status") == "503":
                found.no_hosts = True
            elif self._take_catalog(msg.data):
                found.replies += 1
            found.arrived.set()
            return
        if token.startswith("d"):  # a late answer to an earlier discovery
            self._take_catalog(msg.data)
            return
        pending = self._pending.get(token)
        if pending is None or pending.done.done():
            return
        if headers.get("Status") == "503":
            pending.done.set_result(None)
        elif headers.get(wire.STATUS) == "working":
            pending.seen = asyncio.get_running_loop().time()
            pending.host = headers.get(wire.HOST) or pending.host
        else:
            pending.done.set_result(msg)


def split_name(name: str, known: dict[str, ToolSpec]) -> tuple[str, str | None] | None:
    """``(tool, host)`` of a name a caller used: ``tool@host``, or an OpenAI-style name
    (``fs__read_file``) of an announced tool; None if no host could serve it."""
    parsed = wire.split_pinned(name)
    if parsed is not None:
        return parsed
    tool, at, host = name.rpartition("@")
    if at and not wire.HOST_RE.match(host):
        return None
    base = tool if at else name
    for known_name in known:
        if openai_name(known_name) == base:
            return known_name, (host or None) if at else None
    return None

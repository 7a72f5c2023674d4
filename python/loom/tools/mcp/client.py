"""One MCP server as Loom sees it: a connection that is (re)established on demand, and
its tools, registered as ``<server>:<tool>``."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from loom.errors import ToolFailed, ToolTimeout
from loom.tools.mcp import protocol
from loom.tools.mcp.config import HttpServer, StdioServer
from loom.tools.mcp.protocol import ConnectionLost, McpError, ProtocolViolation, RpcError
from loom.tools.mcp.stdio import StdioTransport
from loom.tools.mcp.streamable_http import StreamableHttpTransport
from loom.tools.mcp.transport import Transport
from loom.tools.registry import ToolRegistry
from loom.tools.spec import ToolSpec

log = logging.getLogger("loom.tools.mcp")

#: Restart backoff after repeated failures: first restart is immediate, then 0.5 s,
#: doubling up to 30 s. It resets after a call that gets an answer.
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: ``tools/list`` pages accepted before giving up on a server that never stops.
MAX_PAGES = 1000

_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


class StartError(McpError):
    """A server could not be started or did not complete the handshake."""


class McpServer:
    """A configured MCP server: connection lifecycle, tool discovery and calls."""

    def __init__(self, config: StdioServer | HttpServer, registry: ToolRegistry) -> None:
        self.config = config
        self.name = config.name
        self.registry = registry
        #: ``initialize`` result: ``serverInfo``, ``capabilities``, ``instructions``.
        self.info: dict[str, Any] = {}
        #: Registered tools by Loom name.
        self.tools: dict[str, McpTool] = {}
        self.transport: Transport | None = None
        self._lock = asyncio.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = ""
        self._closed = False
        self._refresh: asyncio.Task[None] | None = None

    # -- connection ----------------------------------------------------------------

    def _new_transport(self) -> Transport:
        if isinstance(self.config, StdioServer):
            return StdioTransport(self.config, self._on_notification)
        return StreamableHttpTransport(self.config, self._on_notification)

    async def _connect(self, timeout: float) -> Transport:
        """A new transport that has completed ``initialize`` + ``initialized``.

        Raises:
            StartError: with the reason and, for stdio, the server's stderr tail.
        """
        transport = self._new_transport()
        try:
            await transport.open()
            result = await transport.request(
                "initialize",
                {
                    "protocolVersion": protocol.PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": protocol.CLIENT_INFO,
                },
                timeout,
            )
            version = result.get("protocolVersion")
            if version not in protocol.SUPPORTED_VERSIONS:
                raise StartError(
                    f"it speaks MCP protocol version {version!r}; loom supports "
                    f"{', '.join(sorted(protocol.SUPPORTED_VERSIONS))}"
                )
            transport.protocol_version = version
            await transport.notify("notifications/initialized")
        except BaseException as exc:
            detail = self._describe(exc, transport, timeout, "initialize")
            await transport.close()
            if isinstance(exc, (McpError, asyncio.TimeoutError, OSError)):
                raise StartError(detail) from None
            raise
        self.info = result
        server_info = result.get("serverInfo") or {}
        log.info(
            "mcp %s: connected to %s %s (protocol %s)",
            self.name,
            server_info.get("name", "?"),
            server_info.get("version", ""),
            version,
        )
        return transport

    def _describe(self, exc: BaseException, transport: Transport, timeout: float, what: str) -> str:
        if isinstance(exc, asyncio.TimeoutError):
            text = f"no answer to {what} within {timeout:g}s"
        elif isinstance(exc, ConnectionLost):
            text = exc.detail
        else:
            text = str(exc) or type(exc).__name__
        # A dead stdio server's error already quotes its stderr.
        return text if "stderr tail" in text else text + transport.diagnostics()

    async def start(self) -> None:
        """Connects, lists the tools and registers them.

        Raises:
            StartError: it failed (the message names the reason and the stderr tail).
            LoomError: one of its tools clashes with an already registered name.
        """
        timeout = self.config.startup_timeout
        async with self._lock:
            self.transport = await self._unless_closed(await self._connect(timeout))
            try:
                tools = await self._list_tools(self.transport, timeout)
            except (McpError, asyncio.TimeoutError) as exc:
                detail = self._describe(exc, self.transport, timeout, "tools/list")
                await self.transport.close()
                raise StartError(detail) from None
        self._sync(tools, strict=True)

    async def _ensure(self, deadline: float | None) -> Transport:
        """The live transport, restarting the server if it died (with backoff)."""
        transport = self.transport
        if transport is not None and transport.alive:
            return transport
        async with self._lock:
            transport = self.transport
            if transport is not None and transport.alive:
                return transport
            if self._closed:
                raise ConnectionLost(f"MCP server {self.name!r} has been shut down")
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                if deadline is not None and time.monotonic() + wait >= deadline:
                    raise ConnectionLost(
                        f"MCP server {self.name!r} is down ({self._last_error}); "
                        f"next restart attempt in {wait:.1f}s"
                    )
                await asyncio.sleep(wait)
                if self._closed:
                    raise ConnectionLost(f"MCP server {self.name!r} has been shut down")
            if transport is not None:
                await transport.close()
                self.transport = None
            kind = "restarting" if isinstance(self.config, StdioServer) else "reconnecting"
            log.warning("mcp %s: %s (attempt %d)", self.name, kind, self._failures + 1)
            remaining = self.config.startup_timeout
            if deadline is not None:
                remaining = min(remaining, max(deadline - time.monotonic(), 0.001))
            try:
                transport = await self._connect(remaining)
            except StartError as exc:
                self._failed(str(exc))
                raise ConnectionLost(
                    f"MCP server {self.name!r} could not be restarted: {exc}"
                ) from None
            self.transport = await self._unless_closed(transport)
            log.warning(
                "mcp %s: %s", self.name, "restarted" if kind == "restarting" else "reconnected"
            )
            # Its tools may have changed (a new version was installed): resync quietly.
            self._schedule_refresh()
            return transport

    def _failed(self, error: str) -> None:
        """Counts a failure towards the restart backoff."""
        self._failures += 1
        self._last_error = error.splitlines()[0] if error else "failed"
        delay = 0.0 if self._failures <= 1 else BACKOFF_INITIAL * 2 ** (self._failures - 2)
        self._retry_at = time.monotonic() + min(delay, BACKOFF_MAX)

    # -- tools -----------------------------------------------------------------------

    async def _list_tools(self, transport: Transport, timeout: float) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            result = await transport.request(
                "tools/list", {"cursor": cursor} if cursor else None, timeout
            )
            page = result.get("tools")
            if not isinstance(page, list):
                raise ProtocolViolation(f"tools/list returned no tool list: {result!r:.200}")
            tools.extend(t for t in page if isinstance(t, dict) and isinstance(t.get("name"), str))
            cursor = result.get("nextCursor")
            if not cursor:
                return tools
            if not isinstance(cursor, str) or cursor in seen:
                raise ProtocolViolation(f"tools/list returned a bad or repeated cursor {cursor!r}")
            seen.add(cursor)
        raise ProtocolViolation(f"tools/list did not end after {MAX_PAGES} pages")

    def _sync(self, tools: list[dict[str, Any]], *, strict: bool) -> None:
        """Makes the registry hold exactly ``tools``. With ``strict`` a clash with
        another tool's name raises; otherwise it is logged."""
        wanted: dict[str, McpTool] = {}
        for t in tools:
            remote = t["name"]
            local = _BAD_NAME_CHARS.sub("_", remote)[:64]
            if local != remote:
                log.info(
                    "mcp %s: tool %r is registered as %s:%s", self.name, remote, self.name, local
                )
            name = f"{self.name}:{local}"
            if name in wanted:
                log.error("mcp %s: two tools map to %s; ignoring %r", self.name, name, remote)
                continue
            schema = t.get("inputSchema")
            spec = ToolSpec(
                name=name,
                description=str(t.get("description") or t.get("title") or ""),
                parameters=schema if isinstance(schema, dict) else {"type": "object"},
                source="mcp",
                server=self.name,
                idempotent=_idempotent(t.get("annotations")),
            )
            old = self.tools.get(name)
            wanted[name] = (
                old
                if old is not None and old.spec == spec and old.remote == remote
                else McpTool(self, remote, spec)
            )
        for name, tool in list(self.tools.items()):
            if wanted.get(name) is not tool:
                self.registry.unregister(name)
                del self.tools[name]
        for name, tool in wanted.items():
            if name in self.tools:
                continue
            try:
                self.registry.register(tool)
            except Exception:
                if strict:
                    raise
                log.exception("mcp %s: cannot register %s", self.name, name)
                continue
            self.tools[name] = tool
        log.debug("mcp %s: tools %s", self.name, ", ".join(sorted(self.tools)) or "(none)")

    def _schedule_refresh(self) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._do_refresh())

    async def _do_refresh(self) -> None:
        transport = self.transport
        if transport is None or not transport.alive:
            return
        try:
            tools = await self._list_tools(transport, self.config.startup_timeout)
        except (McpError, asyncio.TimeoutError) as exc:
            log.warning("mcp %s: could not refresh the tool list: %s", self.name, exc)
            return
        self._sync(tools, strict=False)

    def _on_notification(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        params = msg.get("params") or {}
        if method == "notifications/tools/list_changed":
            log.info("mcp %s: tool list changed; refreshing", self.name)
            self._schedule_refresh()
        elif method == "notifications/message":
            level = _LOG_LEVELS.get(str(params.get("level")), logging.INFO)
            log.log(level, "mcp %s: %s", self.name, params.get("data"))
        else:
            log.debug("mcp %s: notification %s %.200r", self.name, method, params)

    # -- calls -----------------------------------------------------------------------

    async def call(
        self, tool: str, remote: str, args: dict[str, Any], timeout: float | None
    ) -> Any:
        """Calls ``remote`` on the server for the tool named ``tool`` in Loom.

        Raises:
            ToolFailed: ``isError``, a JSON-RPC error, or the server is down.
            ToolArgumentsInvalid: the server rejected the arguments (-32602).
            ToolTimeout: no reply within ``timeout`` (the request is cancelled).
        """
        timeout = timeout or None
        deadline = None if timeout is None else time.monotonic() + timeout
        params = {"name": remote, "arguments": args}
        for attempt in (1, 2):
            try:
                transport = await self._ensure(deadline)
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
                result = await transport.request("tools/call", params, remaining)
            except asyncio.TimeoutError:
                raise ToolTimeout(
                    tool, f"no reply from MCP server {self.name!r} within {timeout:g}s (cancelled)"
                ) from None
            except RpcError as exc:
                self._answered()
                raise protocol.call_error(tool, exc) from None
            except ConnectionLost as exc:
                if (
                    attempt == 1
                    and exc.retry_safe
                    and not self._closed
                    and self.transport is not None
                ):
                    # Never sent (expired HTTP session, connection refused): a fresh
                    # connection can safely take it.
                    log.info("mcp %s: %s; reconnecting", self.name, exc.detail)
                    self._failed(exc.detail)
                    continue
                if self.transport is not None and not self.transport.alive:
                    self._failed(exc.detail)
                raise ToolFailed(tool, exc.detail, server=self.name) from None
            except McpError as exc:
                raise ToolFailed(
                    tool, f"MCP server {self.name!r}: {exc}", server=self.name
                ) from None
            self._answered()
            return protocol.tool_result(tool, result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _answered(self) -> None:
        self._failures = 0
        self._retry_at = 0.0

    async def close(self) -> None:
        """Ends the connection (kills a stdio server's process group). Does not wait
        for a call that is backing off or restarting: that one closes what it starts."""
        self._closed = True
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        if self.transport is not None:
            await self.transport.close()

    async def _unless_closed(self, transport: Transport) -> Transport:
        if self._closed:
            await transport.close()
            raise ConnectionLost(f"MCP server {self.name!r} has been shut down")
        return transport


class McpTool:
    """A tool of an MCP server, as the registry sees it."""

    def __init__(self, server: McpServer, remote: str, spec: ToolSpec) -> None:
        self.server = server
        #: The tool's name on the server.
        self.remote = remote
        self.spec = spec

    async def invoke(self, ctx: Any, args: dict[str, Any], timeout: float | None) -> Any:
        """Calls the tool on its server (``ctx`` is not sent)."""
        return await self.server.call(self.spec.name, self.remote, args, timeout)


_LOG_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emergency": logging.CRITICAL,
}


def _idempotent(annotations: Any) -> bool:
    """The server's hints say a second call does no more than the first: read-only, or
    idempotent (``idempotentHint``; MCP's default for it is false)."""
    if not isinstance(annotations, dict):
        return False
    return annotations.get("readOnlyHint") is True or annotations.get("idempotentHint") is True


__all__ = ["McpServer", "McpTool", "StartError"]

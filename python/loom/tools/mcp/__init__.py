"""MCP client: ``[mcp.<name>]`` servers' tools in Loom's registry as ``<name>:<tool>``.

Speaks JSON-RPC 2.0 itself (no ``mcp`` SDK) over two transports: newline-delimited
stdio to a child process Loom starts, and streamable HTTP with httpx. The handshake is
``initialize`` (offering protocol ``2025-06-18``) then ``notifications/initialized``;
tools come from ``tools/list`` (following ``nextCursor``) and are called with
``tools/call``. See :func:`loom.tools.mcp.protocol.tool_result` for what a call returns
and how errors map to ``Tool*`` exceptions.

Lifecycle: servers start when the runtime builds its tool registry, concurrently. One
that fails to start is logged (with its stderr tail) and its tools are left out — unless
its table says ``required = true``, which makes that a :class:`~loom.errors.ConfigError`.
A stdio server that dies is restarted on the next call (immediately the first time,
then with exponential backoff while it keeps failing); an HTTP session that expires is
re-initialised. At shutdown, stdio servers get their stdin closed, then SIGTERM, then
SIGKILL, each to the whole process group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loom.errors import MissingEnvironmentVariable
from loom.tools.mcp.client import McpServer, McpTool, StartError
from loom.tools.mcp.config import (
    DEFAULT_STARTUP_TIMEOUT,
    INHERITED_ENV,
    HttpServer,
    ServerConfig,
    StdioServer,
    parse_server,
)
from loom.tools.mcp.protocol import PROTOCOL_VERSION, tool_result
from loom.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from loom._host import ProjectHost
    from loom.config import ProjectConfig

log = logging.getLogger("loom.tools.mcp")


def _parse(name: str, table: Any, project: ProjectConfig) -> StdioServer | HttpServer | None:
    """The server's config; ``None`` when disabled, or when a ``${VAR}`` it needs is
    unset and it is not ``required`` (then it is down this run, like a server that
    failed to start: the other tools keep working)."""
    try:
        return parse_server(name, table, project)
    except MissingEnvironmentVariable as exc:
        required = isinstance(table, Mapping) and table.get("required") is True
        if required:
            raise
        log.error(
            "MCP server %r is not started: %s\n(its tools are unavailable; set "
            "required = true to make this fatal)",
            name,
            exc,
        )
        return None


async def register(registry: ToolRegistry, host: ProjectHost) -> list[McpServer]:
    """Starts/connects every ``[mcp.<name>]`` server of ``host.project`` and registers
    its tools in ``registry``; stops them when the runtime stops.

    Returns:
        The servers that started.

    Raises:
        ConfigError: an invalid ``[mcp.*]`` table, an unset ``${VAR}``, or a
            ``required`` server that failed to start.
    """
    project = host.project
    if project is None or not project.mcp:
        return []
    configs = [_parse(name, table, project) for name, table in project.mcp.items()]
    servers = [McpServer(cfg, registry) for cfg in configs if cfg is not None]

    async def close_all() -> None:
        await asyncio.gather(*(s.close() for s in servers), return_exceptions=True)

    host.on_shutdown(close_all)
    outcomes = await asyncio.gather(*(s.start() for s in servers), return_exceptions=True)
    started: list[McpServer] = []
    for server, outcome in zip(servers, outcomes, strict=True):
        if isinstance(outcome, asyncio.CancelledError):
            await close_all()
            raise outcome
        if isinstance(outcome, BaseException):
            msg = f"MCP server {server.name!r} failed to start: {outcome}"
            if server.config.required or not isinstance(outcome, StartError):
                await close_all()
                if isinstance(outcome, StartError):
                    raise project.error(msg, "mcp", server.name) from None
                raise outcome
            log.error(
                "%s\n(its tools are unavailable; set required = true to make this fatal)", msg
            )
            continue
        started.append(server)
    return started


__all__ = [
    "DEFAULT_STARTUP_TIMEOUT",
    "INHERITED_ENV",
    "PROTOCOL_VERSION",
    "HttpServer",
    "McpServer",
    "McpTool",
    "ServerConfig",
    "StartError",
    "StdioServer",
    "parse_server",
    "register",
    "tool_result",
]

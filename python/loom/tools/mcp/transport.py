"""What the MCP client needs from a transport: requests with replies, notifications,
and a way to tell that the connection is gone."""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

from loom.tools.mcp import protocol
from loom.tools.mcp.protocol import McpError

log = logging.getLogger("loom.tools.mcp")

#: Largest message accepted from a server (one JSON-RPC line or SSE event).
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: Seconds a notification (``initialized``, ``cancelled``) may take to send.
NOTIFY_TIMEOUT = 10.0

NotificationHandler = Callable[[dict[str, Any]], None]


class Transport(abc.ABC):
    """One connection to one MCP server. Not reusable: when it dies, the client makes
    a new one."""

    def __init__(self, server: str, on_notification: NotificationHandler) -> None:
        self.server = server
        self.on_notification = on_notification
        #: The revision agreed in ``initialize`` (sent as a header over HTTP).
        self.protocol_version: str | None = None
        self._ids = itertools.count(1)
        self._background: set[asyncio.Task[Any]] = set()

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """False once the connection is known to be gone."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Starts the process / prepares the connection.

        Raises:
            ConnectionLost: it could not be started.
        """

    @abc.abstractmethod
    async def _roundtrip(self, msg_id: int, method: str, params: dict[str, Any] | None) -> Any:
        """Sends one request and waits for its reply (the raw response object)."""

    @abc.abstractmethod
    async def _send(self, msg: dict[str, Any]) -> None:
        """Sends a message that gets no reply (a notification or our response)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Ends the connection (and the process); idempotent."""

    def diagnostics(self) -> str:
        """Extra detail for error messages (a stdio server's stderr tail)."""
        return ""

    async def request(
        self, method: str, params: dict[str, Any] | None, timeout: float | None
    ) -> dict[str, Any]:
        """Sends a request and returns the ``result`` object of its reply.

        On timeout (or when the caller is cancelled) the server is sent
        ``notifications/cancelled`` for the request, as the protocol asks.

        Raises:
            RpcError: the server answered with an error.
            ConnectionLost: the connection went away.
            ProtocolViolation: the reply is not valid JSON-RPC.
            asyncio.TimeoutError: no reply within ``timeout`` seconds.
        """
        msg_id = next(self._ids)
        try:
            reply = await asyncio.wait_for(self._roundtrip(msg_id, method, params), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            # The spec forbids cancelling `initialize`.
            if method != "initialize" and self.alive:
                self._spawn(self._cancel(msg_id))
            raise
        if not isinstance(reply, dict):
            raise protocol.ProtocolViolation(f"reply is not an object: {reply!r:.200}")
        return protocol.unwrap(reply)

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Sends a notification.

        Raises:
            ConnectionLost: the connection went away.
            asyncio.TimeoutError: it could not be sent within :data:`NOTIFY_TIMEOUT`.
        """
        await asyncio.wait_for(self._send(protocol.notification(method, params)), NOTIFY_TIMEOUT)

    async def _cancel(self, msg_id: int) -> None:
        try:
            await self.notify(
                "notifications/cancelled", {"requestId": msg_id, "reason": "timed out"}
            )
        except (McpError, OSError, asyncio.TimeoutError) as exc:
            log.debug("mcp %s: could not send the cancellation of %s: %r", self.server, msg_id, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _stop_background(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _incoming(self, msg: Any) -> dict[str, Any] | None:
        """Handles a message that is not the reply we wait for: server requests get an
        answer (returned, for the caller to send), notifications go to the handler."""
        if not isinstance(msg, dict) or "method" not in msg:
            log.debug("mcp %s: ignoring unexpected message %.200r", self.server, msg)
            return None
        if "id" in msg:
            return protocol.answer_server_request(msg)
        try:
            self.on_notification(msg)
        except Exception:
            log.exception("mcp %s: notification handler failed", self.server)
        return None

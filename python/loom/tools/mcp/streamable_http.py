"""The streamable HTTP transport (MCP 2025-03-26 and later), with httpx.

Every client message is a POST to the server's endpoint with
``Accept: application/json, text/event-stream``. A request is answered either with one
JSON body or with an SSE stream that may carry server requests and notifications
before the reply. The ``Mcp-Session-Id`` the server assigns in ``initialize`` is sent on
every later message; a 404 for it means the session expired and the client starts a
new one. The session is ended with a DELETE on close.

Not implemented: the optional GET stream for server-initiated messages outside a
request, and resuming a broken SSE stream with ``Last-Event-ID``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from typing import Any

import httpx

from loom._secrets import redact_url
from loom._version import USER_AGENT
from loom.tools.mcp import protocol
from loom.tools.mcp.config import HttpServer
from loom.tools.mcp.protocol import ConnectionLost, McpError, ProtocolViolation, RpcError
from loom.tools.mcp.transport import (
    MAX_MESSAGE_BYTES,
    NOTIFY_TIMEOUT,
    NotificationHandler,
    Transport,
)

log = logging.getLogger("loom.tools.mcp")

#: Connect/write limits; reads are bounded by the caller's timeout instead (an SSE
#: stream may legitimately be quiet while a tool runs).
HTTP_TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=30.0, pool=30.0)
#: Bytes of an HTTP error body quoted in the error message.
ERROR_BODY_CHARS = 500


class StreamableHttpTransport(Transport):
    """A session with a server reached over streamable HTTP."""

    def __init__(self, config: HttpServer, on_notification: NotificationHandler) -> None:
        super().__init__(config.name, on_notification)
        self.config = config
        self.url = config.url
        #: ``Mcp-Session-Id`` assigned by the server, if it uses sessions.
        self.session_id: str | None = None
        self._client: httpx.AsyncClient | None = None
        self._dead = False
        self._closed = False

    @property
    def alive(self) -> bool:
        return self._client is not None and not self._dead and not self._closed

    async def open(self) -> None:
        self._client = httpx.AsyncClient(
            headers={
                **self.config.headers,
                "User-Agent": USER_AGENT,
            },
            timeout=HTTP_TIMEOUT,
            follow_redirects=False,
        )

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol_version is not None:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    def _client_or_raise(self) -> httpx.AsyncClient:
        if self._client is None or self._closed or self._dead:
            raise ConnectionLost("the connection is closed", retry_safe=True)
        return self._client

    async def _roundtrip(self, msg_id: int, method: str, params: dict[str, Any] | None) -> Any:
        client = self._client_or_raise()
        body = protocol.encode(protocol.request(msg_id, method, params))
        try:
            async with client.stream(
                "POST", self.url, content=body, headers=self._headers()
            ) as resp:
                await self._check(resp)
                if method == "initialize":
                    self.session_id = resp.headers.get("mcp-session-id") or None
                ctype = _content_type(resp)
                if ctype == "application/json":
                    data = json.loads(await _read_capped(resp))
                    reply = None
                    for m in data if isinstance(data, list) else [data]:
                        if _is_reply_to(m, msg_id):
                            reply = m
                        else:
                            await self._answer(m)
                    if reply is not None:
                        return reply
                elif ctype == "text/event-stream":
                    async for event in _iter_sse(resp):
                        m = json.loads(event)
                        if _is_reply_to(m, msg_id):
                            return m
                        await self._answer(m)
                else:
                    raise ProtocolViolation(
                        f"unexpected Content-Type {ctype!r} (HTTP {resp.status_code}) "
                        f"in reply to {method}"
                    )
        except httpx.TransportError as exc:
            self._dead = True
            connect = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            raise ConnectionLost(
                f"{'cannot connect to' if connect else 'connection failed:'} "
                f"{redact_url(self.url)}: "
                f"{exc or type(exc).__name__}",
                retry_safe=connect,
            ) from None
        except (ValueError, RecursionError) as exc:  # undecodable, or nested too deeply
            raise ProtocolViolation(f"invalid JSON in reply to {method}: {exc}") from None
        raise ConnectionLost(f"the server ended its response to {method} without a reply")

    async def _send(self, msg: dict[str, Any]) -> None:
        client = self._client_or_raise()
        try:
            resp = await client.post(
                self.url, content=protocol.encode(msg), headers=self._headers()
            )
        except httpx.TransportError as exc:
            self._dead = True
            raise ConnectionLost(
                f"cannot reach {redact_url(self.url)}: {exc or type(exc).__name__}"
            ) from None
        await self._check(resp)

    async def _answer(self, msg: Any) -> None:
        """Handles a server request or notification that arrived on a response."""
        reply = self._incoming(msg)
        if reply is not None:
            try:
                await self._send(reply)
            except McpError as exc:
                log.debug("mcp %s: could not answer %r: %s", self.server, msg.get("method"), exc)

    async def _check(self, resp: httpx.Response) -> None:
        """Raises for error statuses: 404 with a session means it expired."""
        if resp.status_code < 400:
            return
        body = (await _read_capped(resp)).decode("utf-8", "replace")
        if resp.status_code == 404 and self.session_id is not None:
            self._dead = True
            raise ConnectionLost(
                "the server no longer knows our session (HTTP 404)", retry_safe=True
            )
        with suppress(ValueError, RecursionError):
            data = json.loads(body)
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                protocol.unwrap(data)  # raises RpcError
        raise RpcError(
            protocol.INTERNAL_ERROR,
            f"HTTP {resp.status_code} from {redact_url(self.url)}: {body[:ERROR_BODY_CHARS]}",
        )

    async def close(self) -> None:
        """Ends the session (DELETE, best effort) and closes the connection pool."""
        if self._closed:
            return
        self._closed = True
        client = self._client
        if client is None:
            return
        if self.session_id is not None and not self._dead:
            with suppress(httpx.HTTPError):
                await client.delete(
                    self.url,
                    headers={"Mcp-Session-Id": self.session_id},
                    timeout=httpx.Timeout(NOTIFY_TIMEOUT / 5),
                )
        await self._stop_background()
        await client.aclose()


def _content_type(resp: httpx.Response) -> str:
    return str(resp.headers.get("content-type", "")).split(";")[0].strip().lower()


def _is_reply_to(msg: Any, msg_id: int) -> bool:
    return isinstance(msg, Mapping) and protocol.is_response(dict(msg)) and msg.get("id") == msg_id


async def _read_capped(resp: httpx.Response) -> bytes:
    data = bytearray()
    async for chunk in resp.aiter_bytes():
        data += chunk
        if len(data) > MAX_MESSAGE_BYTES:
            raise ProtocolViolation(f"response larger than {MAX_MESSAGE_BYTES} bytes")
    return bytes(data)


async def _iter_sse(resp: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each ``message`` event of a server-sent event stream."""
    data: list[str] = []
    size = 0
    event = "message"
    async for line in resp.aiter_lines():
        if not line:
            if data and event == "message":
                yield "\n".join(data)
            data, size, event = [], 0, "message"
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            size += len(value)
            if size > MAX_MESSAGE_BYTES:
                raise ProtocolViolation(f"SSE event larger than {MAX_MESSAGE_BYTES} bytes")
            data.append(value)
        elif field == "event":
            event = value or "message"
        # `id` and `retry` only matter for resuming a stream, which we don't do.
    if data and event == "message":
        yield "\n".join(data)

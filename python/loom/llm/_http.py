"""The HTTP layer: the pooled ``httpx.AsyncClient`` of a provider, its transport, the
network guard used by :func:`loom.testing.block_network`, and the mapping of transport
exceptions to :mod:`loom.llm.errors` (the one place that does it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Any

import httpx

from ._constants import MAX_CONNECTIONS, MAX_KEEPALIVE_CONNECTIONS
from .errors import LLMConnectionError, LLMResponseError, LLMTimeoutError
from .quirks import is_loopback

log = logging.getLogger("loom.llm")


class NetworkBlockedError(RuntimeError):
    """A request to a non-loopback host was made inside :func:`loom.testing.block_network`.

    Deliberately not an :class:`~loom.llm.errors.LLMError`: retries and fallbacks must not
    swallow it.
    """


#: Depth of nested ``block_network()`` blocks, and hosts they still allow.
_blocked = 0
_allowed_hosts: set[str] = set()


def block(allowed: set[str] | None = None) -> None:
    """Start refusing non-loopback hosts (nestable)."""
    global _blocked
    _blocked += 1
    if allowed:
        _allowed_hosts.update(h.lower() for h in allowed)


def unblock(allowed: set[str] | None = None) -> None:
    """Undo one :func:`block`."""
    global _blocked
    _blocked = max(0, _blocked - 1)
    if _blocked == 0:
        _allowed_hosts.clear()
    elif allowed:
        _allowed_hosts.difference_update(h.lower() for h in allowed)


def check_host(host: str) -> None:
    """Raise :class:`NetworkBlockedError` if ``host`` may not be reached now."""
    if _blocked and not is_loopback(host) and host.lower() not in _allowed_hosts:
        raise NetworkBlockedError(
            f"network access to {host!r} is blocked by loom.testing.block_network(); "
            "use loom.testing.ScriptedModel or a server on 127.0.0.1"
        )


class GuardTransport(httpx.AsyncBaseTransport):
    """Wraps every provider's transport; refuses remote hosts while blocked."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if _blocked:
            check_host(request.url.host)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def aiohttp_available() -> bool:
    """Whether the httpx-aiohttp transport can be used."""
    return (
        importlib.util.find_spec("httpx_aiohttp") is not None
        and importlib.util.find_spec("aiohttp") is not None
    )


def make_transport(kind: str) -> httpx.AsyncBaseTransport:
    """``aiohttp``, ``httpx``, or ``auto`` (aiohttp when installed)."""
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS
    )
    if kind == "aiohttp" or (kind == "auto" and aiohttp_available()):
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=limits)
    return httpx.AsyncHTTPTransport(limits=limits)


def make_client(
    *, kind: str, timeout: float, connect_timeout: float, headers: dict[str, str]
) -> tuple[httpx.AsyncClient, GuardTransport]:
    """A pooled client for one provider, and its (guarded) transport.

    Redirects are not followed: an API that redirects a POST is misconfigured, and
    following it could leak the key elsewhere. The provider sends its own requests
    straight to the transport (public httpx API) because ``AsyncClient.send``'s cookie,
    auth and redirect machinery cost more than the transport itself; the client owns the
    pool and closes it.
    """
    transport = GuardTransport(make_transport(kind))
    client = httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        headers=headers,
        follow_redirects=False,
    )
    return client, transport


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def map_transport_error(exc: BaseException, provider: str, url: str) -> LLMConnectionError:
    """The typed error for a failure below HTTP (connect, read, reset, timeout).

    httpx-aiohttp maps some aiohttp errors loosely (a refused connection becomes
    ``ConnectTimeout``), so an aiohttp exception in the chain decides first.
    """
    where = f"{provider}: {url}"
    chain = _chain(exc)
    for e in chain:
        name = type(e).__name__
        if type(e).__module__.startswith("aiohttp"):
            if name.startswith("ClientConnector"):
                return LLMConnectionError(f"{where}: cannot connect ({e})", provider=provider)
            if "Timeout" in name:
                return LLMTimeoutError(f"{where}: timed out ({name})", provider=provider)
            if name in ("ServerDisconnectedError", "ClientPayloadError", "ClientOSError"):
                return LLMConnectionError(f"{where}: connection broken ({e})", provider=provider)
        if isinstance(e, ConnectionRefusedError):
            return LLMConnectionError(f"{where}: connection refused", provider=provider)
    for e in chain:
        if isinstance(e, (asyncio.TimeoutError, httpx.TimeoutException)):
            return LLMTimeoutError(f"{where}: timed out ({type(e).__name__})", provider=provider)
    if isinstance(exc, httpx.ConnectError):
        return LLMConnectionError(f"{where}: cannot connect ({exc})", provider=provider)
    return LLMConnectionError(
        f"{where}: connection failed ({type(exc).__name__}: {exc})", provider=provider
    )


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    httpx.TransportError,
    OSError,
    asyncio.TimeoutError,
)


async def read_body(response: httpx.Response, max_bytes: int, provider: str) -> bytes:
    """The whole body, refusing more than ``max_bytes`` (checked as it arrives)."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise LLMResponseError(
            f"{provider}: response body of {declared} bytes exceeds the limit of {max_bytes}",
            provider=provider,
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise LLMResponseError(
                f"{provider}: response body exceeds the limit of {max_bytes} bytes",
                provider=provider,
            )
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def request_id(headers: httpx.Headers) -> str | None:
    """The server's id for this request (for support tickets and logs)."""
    for name in ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray"):
        v = headers.get(name)
        if v:
            return str(v)
    return None


def decode_error_body(raw: bytes) -> Any:
    """An error body as JSON if it is JSON, else as text."""
    from pydantic_core import from_json

    try:
        return from_json(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


__all__ = [
    "TRANSPORT_ERRORS",
    "GuardTransport",
    "NetworkBlockedError",
    "aiohttp_available",
    "block",
    "check_host",
    "make_client",
    "map_transport_error",
    "read_body",
    "unblock",
]

"""The HTTP layer: a provider's ``httpx.AsyncClient`` and transport, the network guard
(:func:`block_network`, also :func:`loom.testing.block_network`), and the mapping of
transport exceptions to :mod:`loom.llm.errors` (the one place that does it).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic_core import from_json

from loom._secrets import redact_url, safe_repr

from ._constants import MAX_CONNECTIONS, MAX_ERROR_BODY_BYTES, MAX_KEEPALIVE_CONNECTIONS
from .errors import (
    LLMConnectError,
    LLMConnectionError,
    LLMReadError,
    LLMResponseError,
    LLMTimeoutError,
    make_status_error,
    public_request,
)
from .quirks import is_loopback

log = logging.getLogger("loom.llm")


class NetworkBlockedError(RuntimeError):
    """A request to a non-loopback host was made inside :func:`loom.testing.block_network`.

    Deliberately not an :class:`~loom.llm.errors.LLMError`: retries and fallbacks must not
    swallow it.
    """


#: Hosts that stay reachable while the network is blocked in this context (None: not
#: blocked). A ContextVar, so a block covers the code it wraps and the tasks started
#: inside it, and nothing running beside it (another test, another runtime).
_guard: ContextVar[frozenset[str] | None] = ContextVar("loom.llm.network_guard", default=None)
#: Blocks open in the whole process. While there is one, every provider's transport
#: and httpx's own transports check the guard; patching httpx's classes is
#: process-wide by nature, so this count is too.
_blocked = 0
_patch_lock = threading.Lock()
_unpatched: list[tuple[type, str, Any]] = []


def check_host(host: str) -> None:
    """Raise :class:`NetworkBlockedError` if ``host`` may not be reached now."""
    allowed = _guard.get()
    if allowed is not None and not is_loopback(host) and host.lower() not in allowed:
        raise NetworkBlockedError(
            f"network access to {host!r} is blocked by loom.testing.block_network(); "
            "use loom.testing.ScriptedModel or a server on 127.0.0.1"
        )


def _guarded(original: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    if is_async:

        async def handle_async(self: Any, request: httpx.Request) -> Any:
            check_host(request.url.host)
            return await original(self, request)

        return functools.wraps(original)(handle_async)

    def handle(self: Any, request: httpx.Request) -> Any:
        check_host(request.url.host)
        return original(self, request)

    return functools.wraps(original)(handle)


def _patch_httpx(delta: int) -> None:
    """Count a block opening (+1) or closing (-1); patch httpx's default transports while
    any is open, and restore them after the last."""
    global _blocked
    with _patch_lock:
        _blocked = max(0, _blocked + delta)
        if _blocked and not _unpatched:
            targets: list[tuple[type, str, bool]] = [
                (httpx.AsyncHTTPTransport, "handle_async_request", True),
                (httpx.HTTPTransport, "handle_request", False),
            ]
            for cls, name, is_async in targets:
                original = cls.__dict__[name]
                _unpatched.append((cls, name, original))
                setattr(cls, name, _guarded(original, is_async))
        elif not _blocked:
            while _unpatched:
                cls, name, original = _unpatched.pop()
                setattr(cls, name, original)


@contextmanager
def block_network(allow: Iterable[str] = ()) -> Iterator[None]:
    """Refuse LLM requests to anything but loopback (and ``allow``ed hosts) inside the block.

    Covers every :class:`~loom.llm.LLMProvider` (its transport checks the guard) and any
    other ``httpx`` client (its default transports are patched while a block is open). A
    blocked request raises :class:`NetworkBlockedError`, which retries and fallbacks do
    not catch. Scoped to the current context (and tasks started in it); nestable, an
    inner block allowing what the outer allowed plus its own ``allow``. Usable as a
    pytest fixture body::

        @pytest.fixture(autouse=True)
        def _no_network():
            with block_network():
                yield
    """
    outer = _guard.get()
    allowed = frozenset(h.lower() for h in allow) | (outer or frozenset())
    token = _guard.set(allowed)
    _patch_httpx(+1)
    try:
        yield
    finally:
        _patch_httpx(-1)
        try:
            _guard.reset(token)
        except ValueError:  # closed from another context (an async fixture's teardown)
            _guard.set(outer)


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
    """The typed error for a failure below HTTP (connect, read, reset, timeout), mapped to
    the most specific class, as httpx would: :class:`LLMConnectError` (an
    ``httpx.ConnectError``), :class:`LLMTimeoutError` (an ``httpx.TimeoutException``),
    :class:`LLMReadError` (an ``httpx.ReadError``), else :class:`LLMConnectionError`.

    httpx-aiohttp maps some aiohttp errors loosely (a refused connection becomes
    ``ConnectTimeout``), so an aiohttp exception in the chain decides first.
    """
    where = f"{provider}: {redact_url(url)}"
    request = public_request("POST", url)

    def err(cls: type[LLMConnectionError], what: str) -> LLMConnectionError:
        return cls(f"{where}: {what}", provider=provider, request=request)

    chain = _chain(exc)
    for e in chain:
        name = type(e).__name__
        if type(e).__module__.startswith("aiohttp"):
            if name.startswith("ClientConnector"):
                return err(LLMConnectError, f"cannot connect ({e})")
            if "Timeout" in name:
                return err(LLMTimeoutError, f"timed out ({name})")
            if name in ("ServerDisconnectedError", "ClientPayloadError", "ClientOSError"):
                return err(LLMReadError, f"connection broken ({e})")
        if isinstance(e, ConnectionRefusedError):
            return err(LLMConnectError, "connection refused")
    for e in chain:
        if isinstance(e, (asyncio.TimeoutError, httpx.TimeoutException)):
            return err(LLMTimeoutError, f"timed out ({type(e).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return err(LLMConnectError, f"cannot connect ({exc})")
    if isinstance(exc, (httpx.ReadError, httpx.RemoteProtocolError, ConnectionResetError)):
        return err(LLMReadError, f"connection broken ({type(exc).__name__}: {exc})")
    return err(LLMConnectionError, f"connection failed ({type(exc).__name__}: {exc})")


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
    try:
        return from_json(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


@dataclass(frozen=True, repr=False)
class Endpoint:
    """Everything one provider needs to send a request, computed once. Its ``repr``
    masks the URL's credentials (:mod:`loom._secrets`); headers and secrets are left
    out entirely."""

    provider: str
    url: httpx.URL
    #: Carries the Authorization header: kept out of repr (and so out of tracebacks
    #: that print objects).
    headers: dict[str, str] = field(repr=False)
    timeout: float
    connect_timeout: float
    client: httpx.AsyncClient
    #: The pool's transport when the provider owns the client (the fast path), else None.
    transport: httpx.AsyncBaseTransport | None
    max_response_bytes: int
    secrets: list[str] = field(repr=False)
    bad_request_500: bool = False

    def __repr__(self) -> str:
        return safe_repr(self)

    def timeouts(self, override: float | None) -> dict[str, float]:
        """httpx's per-request timeout extension."""
        t = self.timeout if override is None else override
        return {"connect": self.connect_timeout, "read": t, "write": t, "pool": t}


async def open_attempt(
    ep: Endpoint, content: bytes, extra_headers: dict[str, str], timeout: float | None
) -> httpx.Response:
    """Send one attempt; return the 2xx response with its body unread.

    Raises:
        LLMConnectionError: transport failure (``LLMTimeoutError`` for timeouts).
        LLMStatusError: an error status (the subclass for it), body read and scrubbed.
    """
    headers = {**ep.headers, **extra_headers} if extra_headers else ep.headers
    try:
        if ep.transport is not None:
            # Our own pool: straight to the transport (see make_client for why).
            request = httpx.Request(
                "POST",
                ep.url,
                headers=headers,
                content=content,
                extensions={"timeout": ep.timeouts(timeout)},
            )
            response = await ep.transport.handle_async_request(request)
            response.request = request
        else:
            # A caller-supplied client: honour everything it is configured with.
            t = ep.timeouts(timeout)
            request = ep.client.build_request(
                "POST",
                ep.url,
                content=content,
                headers=headers,
                timeout=httpx.Timeout(t["read"], connect=t["connect"]),
            )
            response = await ep.client.send(request, stream=True)
    except TRANSPORT_ERRORS as exc:
        raise map_transport_error(exc, ep.provider, str(ep.url)) from None
    if response.status_code >= 400:
        try:
            raw = await read_body(response, MAX_ERROR_BODY_BYTES, ep.provider)
        except (LLMResponseError, httpx.TransportError, OSError, asyncio.TimeoutError):
            raw = b""
        finally:
            await response.aclose()
        raise make_status_error(
            response.status_code,
            decode_error_body(raw),
            request_id=request_id(response.headers),
            provider=ep.provider,
            secrets=ep.secrets,
            headers=dict(response.headers),
            bad_request_500=ep.bad_request_500,
            request=public_request("POST", ep.url),
        )
    return response


async def fetch_json(
    ep: Endpoint, content: bytes, extra_headers: dict[str, str], timeout: float | None
) -> dict[str, Any]:
    """One non-streamed attempt: the decoded JSON object of a 2xx response.

    Raises:
        LLMResponseError: the body is too large, not JSON, or not an object.
    """
    response = await open_attempt(ep, content, extra_headers, timeout)
    try:
        raw = await read_body(response, ep.max_response_bytes, ep.provider)
    except TRANSPORT_ERRORS as exc:
        raise map_transport_error(exc, ep.provider, str(ep.url)) from None
    finally:
        await response.aclose()
    try:
        data = from_json(raw)
    except ValueError as exc:
        ctype = response.headers.get("content-type", "?")
        raise LLMResponseError(
            f"{ep.provider}: expected a JSON body, got {ctype!r} that does not parse "
            f"({exc}): {raw[:200]!r}",
            provider=ep.provider,
        ) from None
    if not isinstance(data, dict):
        raise LLMResponseError(f"{ep.provider}: JSON body is not an object", provider=ep.provider)
    return data


__all__ = [
    "TRANSPORT_ERRORS",
    "Endpoint",
    "GuardTransport",
    "NetworkBlockedError",
    "aiohttp_available",
    "block_network",
    "check_host",
    "fetch_json",
    "make_client",
    "map_transport_error",
    "open_attempt",
    "read_body",
]

"""A provider's connection pool and the event loop it belongs to.

A pooled connection belongs to the event loop that opened it: a provider used from a new
loop (a second ``asyncio.run``) gets a fresh pool, and the old one, whose loop is gone,
can only be dropped. A pool that no runtime closes closes itself when its loop ends
(``asyncio.run`` cancels leftover tasks, and a task parked on the loop does the closing
as it is cancelled), so no "Unclosed client session" warning is printed at exit.

:func:`endpoint` computes what every request of a provider sends (URL, headers,
timeouts) once per pool, not per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx

from . import _http
from .config import LLMConfig
from .quirks import Quirks

log = logging.getLogger("loom.llm")

#: Runs after a pool closed itself at the end of its loop (the provider's own cleanup).
LoopEndHook = Callable[[], Awaitable[None]]


class Pool:
    """The ``httpx.AsyncClient`` of one provider and its ``with_options`` copies.

    Args:
        name: The provider's name (for logs and task names).
        kind: ``aiohttp``, ``httpx`` or ``auto`` (see :func:`loom.llm._http.make_transport`).
        timeout: The client's default read timeout (requests carry their own).
        connect_timeout: The client's connect timeout.
        client: A caller's client to use instead; it is never closed here.
        at_loop_end: None when someone else (the runtime) closes the pool; otherwise the
            pool closes itself when its loop ends and then awaits this hook.
    """

    def __init__(
        self,
        name: str,
        *,
        kind: str,
        timeout: float,
        connect_timeout: float,
        client: httpx.AsyncClient | None = None,
        at_loop_end: LoopEndHook | None = None,
    ) -> None:
        self.name = name
        self._kind = kind
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        #: The client now (None before the first request and after closing).
        self.client: httpx.AsyncClient | None = client
        #: Its transport when the pool made the client (the fast path), else None.
        self.transport: httpx.AsyncBaseTransport | None = None
        self._owned = client is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._at_loop_end = at_loop_end
        self._closer: asyncio.Task[None] | None = None

    @property
    def owned(self) -> bool:
        """Whether the pool made (and closes) its client, rather than a caller."""
        return self._owned

    def open(self) -> httpx.AsyncClient:
        """The client for the running loop (made on first use, remade on a new loop)."""
        client = self.client
        if not self._owned:
            if client is None:
                raise RuntimeError(f"{self.name}: the connection pool is closed")
            return client
        loop = asyncio.get_running_loop()
        if client is not None and self._loop is loop:
            return client
        if client is not None:
            log.debug("%s: new event loop, new connection pool", self.name)
        client, self.transport = _http.make_client(
            kind=self._kind,
            timeout=self._timeout,
            connect_timeout=self._connect_timeout,
            headers={},
        )
        self.client = client
        self._loop = loop
        if self._at_loop_end is not None:
            self._closer = loop.create_task(
                self._close_with_loop(), name=f"loom.llm:{self.name}:close-at-exit"
            )
        return client

    async def _close_with_loop(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self._closer = None
            await self._drop()
            if self._at_loop_end is not None:
                await self._at_loop_end()

    async def _drop(self) -> None:
        client, self.client = self.client, None
        self.transport = None
        self._loop = None
        if client is not None and self._owned:
            await client.aclose()

    async def aclose(self) -> None:
        """Close the pool (a caller's client is only let go of). Idempotent."""
        closer, self._closer = self._closer, None
        if closer is not None and closer is not asyncio.current_task():
            closer.cancel()
        await self._drop()


def endpoint(
    config: LLMConfig,
    quirks: Quirks,
    *,
    base_url: str,
    api_key: str | None,
    secrets: list[str],
    pool: Pool,
) -> _http.Endpoint:
    """Everything a request of this provider sends, for the pool's current client."""
    headers = {
        "User-Agent": "loom-llm",
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate",
        "Content-Type": "application/json",
    }
    headers.update(quirks.headers)
    headers.update(config.headers)
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    client = pool.open()
    return _http.Endpoint(
        provider=config.name,
        url=httpx.URL(base_url + "/chat/completions"),
        headers=headers,
        timeout=config.timeout,
        connect_timeout=config.connect_timeout,
        client=client,
        transport=pool.transport,
        max_response_bytes=config.max_response_bytes,
        secrets=secrets,
        bad_request_500=quirks.name == "llamacpp",
    )


__all__ = ["LoopEndHook", "Pool", "endpoint"]

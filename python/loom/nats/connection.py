"""Connecting a runtime to a NATS server."""

from __future__ import annotations

import asyncio
import logging

from loom._secrets import redact_url
from loom.errors import BusError
from loom.nats.bridge import BusHost, NatsBridge
from loom.nats.settings import BusSettings

log = logging.getLogger("loom.nats")


async def connect(
    host: BusHost,
    url: str | None = None,
    *,
    settings: BusSettings | None = None,
    name: str | None = None,
) -> NatsBridge:
    """Connects ``host``'s bus (a :class:`~loom.Runtime`) to the NATS server at
    ``url``; call it before starting agents. The bridge closes when the host stops.

    Raises:
        BusError: the server cannot be reached.
    """
    import nats

    settings = settings or BusSettings(nats=url)
    url = url or settings.nats
    if not url:
        raise BusError("connect(): no NATS URL (give url= or [bus] nats)")
    name = settings.name or name
    shown = redact_url(url)  # nats://user:password@host is a common spelling

    async def on_error(exc: Exception) -> None:
        log.warning("nats %s: %s", shown, _without(str(exc), url))

    try:
        # The first connection must work (fail fast and clearly); after that the
        # client reconnects for as long as it takes.
        nc = await asyncio.wait_for(
            nats.connect(
                url,
                name=name or "loom",
                connect_timeout=3,
                max_reconnect_attempts=-1,
                error_cb=on_error,
            ),
            timeout=5,
        )
    except Exception as exc:
        detail = _without(str(exc), url) or type(exc).__name__
        raise BusError(f"cannot connect to NATS at {shown}: {detail}") from None
    bridge = NatsBridge(host, nc)
    await bridge.start()
    host.on_shutdown(bridge.close)
    log.info("bus joined to NATS at %s", shown)
    return bridge


def _without(text: str, url: str) -> str:
    """``text`` with ``url`` (as the client may quote it) shown without credentials."""
    return text.replace(url, redact_url(url)) if url else text

"""Round trips to the NATS server that come after everything queued before them.

nats-py (2.16) writes the ``PING`` of ``Client.flush()`` straight to the socket, while
commands queued just before it (a ``PUB``, an ``UNSUB``) wait in the client's buffer for
its flusher task. So the ``PONG`` can return before the server has seen them:
``flush()`` does not prove that earlier publishes arrived, and ``Subscription.drain()``
can finish before the server has its ``UNSUB`` — a message the server delivers in
between reaches a subscription the client has already removed and is dropped without
a trace (for a request: no reply and no "no responders", so its caller waits out its
timeout). These helpers write the buffer first, then make the round trip.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.subscription import Subscription

log = logging.getLogger("loom.nats")


async def _write_queued(nc: Client) -> None:
    """Hands what the client has queued to the socket, in order (waits for its flusher)."""
    write = getattr(nc, "_flush_pending", None)  # private; absent: plain flush() only
    if write is not None:
        await write(force_flush=True)


async def round_trip(nc: Client, timeout: float = 2.0) -> None:
    """Returns once the server has processed everything this client sent before."""
    await _write_queued(nc)
    await nc.flush(timeout=max(int(timeout), 1))


async def drain(nc: Client, sub: Subscription) -> None:
    """Ends ``sub`` without losing a message the server delivered to it: the server has
    the ``UNSUB`` before the round trip that ends the drain starts."""
    unsubscribe = getattr(nc, "_send_unsubscribe", None)  # private, as above
    if unsubscribe is not None and not nc.is_reconnecting:
        await unsubscribe(sub._id)
        await _write_queued(nc)
    # Sends UNSUB again (the server ignores it), waits for a PONG that now follows it,
    # then for the messages already received to be handled.
    await sub.drain()  # type: ignore[no-untyped-call]

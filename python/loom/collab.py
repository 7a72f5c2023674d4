"""Collaboration primitives over the bus: fan-out/fan-in, barrier, contract-net.

They use only topics, ``reply_to`` inboxes and correlation ids, so they work the same
on the in-process bus and across processes on NATS.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from loom._core import Envelope
from loom.bus import Subscription
from loom.errors import LoomError, RequestTimeout

log = logging.getLogger("loom.collab")

#: Topic prefix for barrier traffic.
BARRIER_PREFIX = "_loom.barrier"


class Collaborator(Protocol):
    """What the primitives use of an agent's context (:class:`loom.AgentContext`)."""

    @property
    def agent_id(self) -> str: ...

    @property
    def inbox(self) -> str: ...

    async def emit(
        self,
        topic: str,
        type: str = ...,
        payload: Any = ...,
        *,
        correlation_id: str | None = ...,
        reply_to: str | None = ...,
    ) -> None: ...

    async def request(
        self, topic: str, type: str = ..., payload: Any = ..., *, timeout: float = ...
    ) -> Envelope: ...

    def subscribe(
        self, pattern: str, handler: Callable[[Any, str, Envelope], Any], *, qos: Any = ...
    ) -> Subscription: ...

    async def unsubscribe(self, subscription: Subscription, *, timeout: float = ...) -> int: ...

    def collecting(
        self, correlation_id: str, collect: Callable[[Envelope], None]
    ) -> AbstractContextManager[None]: ...


async def gather(
    ctx: Collaborator,
    topics: str | Sequence[str],
    type: str = "request",
    payload: Any = None,
    *,
    first: int | None = None,
    timeout: float = 5.0,
) -> list[Envelope]:
    """Sends one request per topic and collects replies (see ``ctx.gather``)."""
    if isinstance(topics, str):
        topics = [topics]
    if first is not None and first < 1:
        raise ValueError("first must be at least 1")
    correlation_id = uuid.uuid4().hex
    replies: list[Envelope] = []
    enough = asyncio.Event()

    def collect(event: Envelope) -> None:
        if first is None or len(replies) < first:
            replies.append(event)
        if first is not None and len(replies) >= first:
            enough.set()

    with ctx.collecting(correlation_id, collect):
        for topic in topics:
            await ctx.emit(topic, type, payload, correlation_id=correlation_id, reply_to=ctx.inbox)
        try:
            await asyncio.wait_for(enough.wait(), timeout)
        except asyncio.TimeoutError:
            pass
    return list(replies)


async def barrier(
    ctx: Collaborator, name: str, parties: int, *, timeout: float = 30.0
) -> list[str]:
    """Waits until ``parties`` distinct agents have called ``barrier(name, parties)``.

    Every participant announces itself on ``_loom.barrier.<name>``; whoever sees a
    newcomer announces itself again, so late joiners learn about earlier arrivals
    without a coordinator.
    """
    if parties < 1:
        raise ValueError("parties must be at least 1")
    topic = f"{BARRIER_PREFIX}.{name}"
    seen: set[str] = {ctx.agent_id}
    done = asyncio.Event()
    if parties == 1:
        return [ctx.agent_id]

    async def on_arrival(_ctx: Collaborator, _topic: str, event: Envelope) -> None:
        who = event.source
        if who is None or who in seen:
            return
        seen.add(who)
        if len(seen) >= parties:
            done.set()
        await ctx.emit(topic, "arrive", None)

    sub = ctx.subscribe(topic, on_arrival, qos="reliable")
    try:
        await ctx.emit(topic, "arrive", None)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(
                f"{ctx.agent_id}: barrier {name!r} saw {len(seen)} of {parties} parties "
                f"within {timeout}s ({', '.join(sorted(seen))})"
            ) from None
    finally:
        await ctx.unsubscribe(sub, timeout=1.0)
    return sorted(seen)


@dataclass(frozen=True)
class ContractResult:
    """The outcome of a contract-net round."""

    winner: str
    bid: Envelope
    result: Envelope
    bids: list[Envelope] = field(default_factory=list)


def default_choice(bids: list[Envelope]) -> Envelope | None:
    """Lowest ``cost``, else highest ``score``, else the first bid; ties are broken at
    random so that equal bidders share the work."""
    if not bids:
        return None

    def num(event: Envelope, key: str) -> float | None:
        p = event.payload
        v = p.get(key) if isinstance(p, dict) else None
        return float(v) if isinstance(v, (int, float)) else None

    costed = [(c, b) for b in bids if (c := num(b, "cost")) is not None]
    if costed:
        best = min(c for c, _ in costed)
        return random.choice([b for c, b in costed if c == best])
    scored = [(s, b) for b in bids if (s := num(b, "score")) is not None]
    if scored:
        top = max(s for s, _ in scored)
        return random.choice([b for s, b in scored if s == top])
    return bids[0]


async def contract_net(
    ctx: Collaborator,
    topic: str,
    task: Any,
    *,
    window: float = 1.0,
    choose: Callable[[list[Envelope]], Envelope | None] | None = None,
    timeout: float = 30.0,
) -> ContractResult:
    """Runs one contract-net round.

    1. Publishes ``type="cfp"`` with ``task`` on ``topic``; bidders answer with
       ``ctx.reply(cfp, type="bid", payload={...})`` (``cost`` or ``score`` keys
       are understood by the default chooser).
    2. Collects bids for ``window`` seconds and picks one with ``choose``.
    3. Sends ``type="award"`` to the winner (it arrives at the winner's ``on_event``;
       the winner answers with ``ctx.reply(award, type="result", payload=...)``) and
       ``type="reject"`` to the others.

    Raises:
        LoomError: no bids arrived (or ``choose`` picked none).
        RequestTimeout: the winner did not deliver a result within ``timeout``.
    """
    bids = await gather(ctx, topic, "cfp", task, timeout=window)
    bids = [b for b in bids if b.type == "bid"]
    chosen = (choose or default_choice)(bids)
    if chosen is None or chosen.reply_to is None:
        raise LoomError(f"{ctx.agent_id}: no acceptable bid for {topic!r} within {window}s")
    for bid in bids:
        if bid is not chosen and bid.reply_to:
            await ctx.emit(bid.reply_to, "reject", None, correlation_id=bid.correlation_id)
    result = await ctx.request(chosen.reply_to, "award", task, timeout=timeout)
    return ContractResult(winner=chosen.source or "?", bid=chosen, result=result, bids=bids)


__all__ = ["Collaborator", "ContractResult", "barrier", "contract_net", "default_choice", "gather"]

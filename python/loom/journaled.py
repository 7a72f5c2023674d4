"""Collaboration, the clock and randomness as effects of a durable run.

Outside a durable run each call simply runs. Inside one, its result is journaled the
first time and read back from the journal when the run resumes, so a resumed run sees
the replies, time and random numbers its first attempt saw (docs/durability.md).
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable, Sequence
from typing import Any

from loom import _effects, collab
from loom._core import Envelope
from loom.durable.records import event_from_json, event_to_json, message_json


async def gather(
    ctx: collab.Collaborator,
    topics: str | Sequence[str],
    type: str,
    payload: Any,
    *,
    first: int | None,
    timeout: float,
) -> list[Envelope]:
    """:func:`loom.collab.gather`, journaled in a durable run."""
    effects = _effects.current()
    if effects is None:
        return await collab.gather(ctx, topics, type, payload, first=first, timeout=timeout)
    wanted = [topics] if isinstance(topics, str) else list(topics)
    message = {**message_json(",".join(wanted), type, payload, None, None, None),
               "first": first}  # fmt: skip

    async def ask(_key: str) -> list[Envelope]:
        return await collab.gather(ctx, topics, type, payload, first=first, timeout=timeout)

    return await _effects.journaled(
        effects,
        "gather",
        message,
        ask,
        encode=lambda events: [event_to_json(e) for e in events],
        decode=lambda data: [event_from_json(e) for e in data],
    )


async def barrier(
    ctx: collab.Collaborator, name: str, parties: int, *, timeout: float
) -> list[str]:
    """:func:`loom.collab.barrier`, journaled in a durable run."""
    effects = _effects.current()
    if effects is None:
        return await collab.barrier(ctx, name, parties, timeout=timeout)

    async def meet(_key: str) -> list[str]:
        return await collab.barrier(ctx, name, parties, timeout=timeout)

    return await _effects.journaled(effects, "barrier", {"name": name, "parties": parties}, meet)


async def contract_net(
    ctx: collab.Collaborator,
    topic: str,
    task: Any,
    *,
    window: float,
    choose: Callable[[list[Envelope]], Envelope | None] | None,
    timeout: float,
) -> collab.ContractResult:
    """:func:`loom.collab.contract_net`, journaled in a durable run."""
    effects = _effects.current()
    if effects is None:
        return await collab.contract_net(
            ctx, topic, task, window=window, choose=choose, timeout=timeout
        )

    async def award(_key: str) -> collab.ContractResult:
        return await collab.contract_net(
            ctx, topic, task, window=window, choose=choose, timeout=timeout
        )

    def encode(r: collab.ContractResult) -> dict[str, Any]:
        return {"winner": r.winner, "bid": event_to_json(r.bid),
                "result": event_to_json(r.result),
                "bids": [event_to_json(b) for b in r.bids]}  # fmt: skip

    def decode(d: dict[str, Any]) -> collab.ContractResult:
        return collab.ContractResult(
            d["winner"], event_from_json(d["bid"]), event_from_json(d["result"]),
            [event_from_json(b) for b in d["bids"]],
        )  # fmt: skip

    request = message_json(topic, "cfp", task, None, None, None)
    return await _effects.journaled(
        effects, "contract_net", request, award, encode=encode, decode=decode
    )


async def _recorded(kind: str, value: Callable[[], float]) -> float:
    """``value()``, journaled as ``kind`` in a durable run."""
    effects = _effects.current()
    if effects is None:
        return value()

    async def read(_key: str) -> float:
        return value()

    return await _effects.journaled(effects, kind, {}, read)


async def now() -> float:
    """Seconds since the Unix epoch, journaled in a durable run."""
    return await _recorded("now", time.time)


async def random() -> float:
    """A random float in [0, 1), journaled in a durable run."""
    return await _recorded("random", _random.random)

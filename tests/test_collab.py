"""Collaboration primitives end to end: fan-out/fan-in, barrier, contract-net."""

from __future__ import annotations

import asyncio
import time

import pytest

from loom import Agent, LoomError, RequestTimeout, Runtime


def delayed_echo(delay: float):  # type: ignore[no-untyped-def]
    async def h(ctx, topic, event):  # type: ignore[no-untyped-def]
        await asyncio.sleep(delay)
        await ctx.reply(event, payload=ctx.agent_id)

    return h


async def test_gather_first_k_within_timeout(runtime: Runtime) -> None:
    workers = [Agent(f"w{i}", topics=["jobs.*"], on_event=delayed_echo(0.02 * i)) for i in range(5)]
    for w in workers:
        await w.start()
    async with Agent("lead") as lead:
        start = time.monotonic()
        first3 = await lead.ctx.gather("jobs.x", payload="q", first=3, timeout=2)
        assert time.monotonic() - start < 1.0, "returned as soon as 3 replies arrived"
        assert [r.payload for r in first3] == ["w0", "w1", "w2"]
        # Without `first`, collect everything that arrives within the timeout.
        everyone = await lead.ctx.gather("jobs.y", timeout=0.5)
        assert sorted(r.payload for r in everyone) == [f"w{i}" for i in range(5)]
        # Send to N distinct topics.
        two = await lead.ctx.gather(["w0.direct", "jobs.z"], first=1, timeout=1)
        assert len(two) == 1
        # Nobody listening: an empty list after the timeout, not a hang.
        assert await lead.ctx.gather("nobody", timeout=0.1) == []
    for w in workers:
        await w.stop()


async def test_barrier_all_meet_even_when_arriving_late(runtime: Runtime) -> None:
    agents = [Agent(f"p{i}") for i in range(4)]
    for a in agents:
        await a.start()

    async def arrive(a: Agent, delay: float) -> list[str]:
        await asyncio.sleep(delay)
        return await a.ctx.barrier("sync", parties=4, timeout=3)

    results = await asyncio.gather(*(arrive(a, 0.05 * i) for i, a in enumerate(agents)))
    assert all(r == ["p0", "p1", "p2", "p3"] for r in results)
    for a in agents:
        await a.stop()


async def test_barrier_times_out_with_who_arrived(runtime: Runtime) -> None:
    async with Agent("x") as a, Agent("y") as b:
        with pytest.raises(RequestTimeout, match="2 of 3"):
            await asyncio.gather(
                a.ctx.barrier("b", parties=3, timeout=0.3),
                b.ctx.barrier("b", parties=3, timeout=0.3),
            )


async def test_contract_net_awards_the_cheapest_bidder(runtime: Runtime) -> None:
    awarded: list[str] = []
    rejected: list[str] = []

    def contractor(cost: float):  # type: ignore[no-untyped-def]
        async def h(ctx, topic, event):  # type: ignore[no-untyped-def]
            if event.type == "cfp":
                await ctx.reply(event, "bid", {"cost": cost})
            elif event.type == "award":
                awarded.append(ctx.agent_id)
                await ctx.reply(
                    event, "result", {"done": event.payload["task"], "by": ctx.agent_id}
                )
            elif event.type == "reject":
                rejected.append(ctx.agent_id)

        return h

    bidders = [
        Agent("c5", topics=["cfp.build"], on_event=contractor(5)),
        Agent("c2", topics=["cfp.build"], on_event=contractor(2)),
        Agent("c9", topics=["cfp.build"], on_event=contractor(9)),
    ]
    for b in bidders:
        await b.start()
    async with Agent("manager") as m:
        result = await m.ctx.contract_net("cfp.build", {"task": "shed"}, window=0.3)
        await asyncio.sleep(0.05)
    assert result.winner == "c2"
    assert result.result.payload == {"done": "shed", "by": "c2"}
    assert len(result.bids) == 3
    assert awarded == ["c2"]
    assert sorted(rejected) == ["c5", "c9"]
    for b in bidders:
        await b.stop()


async def test_contract_net_without_bids_fails_clearly(runtime: Runtime) -> None:
    async with Agent("manager") as m:
        with pytest.raises(LoomError, match="no acceptable bid"):
            await m.ctx.contract_net("cfp.none", {"task": 1}, window=0.1)


async def test_contract_net_custom_choice(runtime: Runtime) -> None:
    async def bidder(ctx, topic, event):  # type: ignore[no-untyped-def]
        if event.type == "cfp":
            await ctx.reply(event, "bid", {"score": len(ctx.agent_id)})
        elif event.type == "award":
            await ctx.reply(event, "result", ctx.agent_id)

    a, b = (
        Agent("short", topics=["t"], on_event=bidder),
        Agent("longer", topics=["t"], on_event=bidder),
    )
    await a.start()
    await b.start()
    async with Agent("m") as m:
        default = await m.ctx.contract_net("t", None, window=0.2)
        assert default.winner == "longer"  # highest score
        pick_short = await m.ctx.contract_net(
            "t", None, window=0.2, choose=lambda bids: min(bids, key=lambda e: e.payload["score"])
        )
        assert pick_short.result.payload == "short"
    await a.stop()
    await b.stop()

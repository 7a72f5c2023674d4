"""The lead: splits a job into parts, farms them out over the bus, merges the answers."""

import asyncio


async def on_event(ctx, topic, event):
    parts = event.payload["parts"]
    # Contract-net per part: the cheapest worker wins each one; parts run concurrently.
    results = await asyncio.gather(
        *(ctx.contract_net("work.offer", {"part": p}, window=0.2) for p in parts)
    )
    await ctx.reply(
        event,
        "report",
        {
            "answers": [r.result.payload for r in results],
            "assigned": {r.bid.payload["part"]: r.winner for r in results},
        },
    )

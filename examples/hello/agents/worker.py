"""A worker: bids on offers (cost = current load) and does the work it is awarded."""


async def on_event(ctx, topic, event):
    if event.type == "cfp":
        part = event.payload["part"]
        await ctx.reply(event, "bid", {"part": part, "cost": ctx.config["cost"] + len(part)})
    elif event.type == "award":
        part = event.payload["part"]
        await ctx.reply(event, "result", f"{part.upper()} (done by {ctx.agent_id})")

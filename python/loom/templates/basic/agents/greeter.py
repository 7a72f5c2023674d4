"""A reactive agent: answers every request on greet.> with a greeting."""


async def on_event(ctx, topic, event):
    name = (event.payload or {}).get("name", "there")
    if event.reply_to:
        await ctx.reply(event, payload={"message": f"{ctx.config['greeting']}, {name}!"})

"""The 10-line agent from the README (executed by tests/test_docs.py)."""

import asyncio

from loom import Agent


async def on_event(ctx, topic, event):
    await ctx.reply(event, payload={"echo": event.payload, "from": ctx.agent_id})


async def main() -> None:
    async with Agent("echo", topics=["echo.*"], on_event=on_event), Agent("me") as me:
        reply = await me.ctx.request("echo.hello", payload="hi", timeout=5)
        print(reply.payload)  # {'echo': 'hi', 'from': 'echo'}


asyncio.run(main())

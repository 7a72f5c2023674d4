"""The terminal: reads your lines (off the event loop), asks the assistant, prints the
answer; at end of input it asks the runtime to stop."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any


def _read(prompt: str) -> str | None:
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    return None if line == "" else line.rstrip("\n")


async def main(ctx: Any) -> None:
    thread = uuid.uuid4().hex[:8]
    print(f"chat-assistant (thread {thread}); Ctrl-D to leave", flush=True)
    while True:
        line = await asyncio.to_thread(_read, "you> ")
        if line is None or line.strip() == "/exit":
            print(flush=True)
            ctx.runtime.request_stop()
            return
        if not line.strip():
            continue
        reply = await ctx.request(
            "chat.message", "message", {"text": line}, thread_id=thread, timeout=300
        )
        print(
            f"assistant> {reply.payload['text'].strip()}  [{reply.payload['tokens']} tokens]",
            flush=True,
        )

"""The assistant: one CognitiveAgent (with its memory) per conversation thread."""

from __future__ import annotations

from typing import Any

from loom.cognitive import CognitiveAgent, CognitiveConfig
from loom.llm.auto import provider_for

_threads: dict[str, CognitiveAgent] = {}


async def on_event(ctx: Any, topic: str, event: Any) -> None:
    thread = event.thread_id or "default"
    if thread not in _threads:
        llm = provider_for(ctx, ctx.config.get("llm", "auto"))
        _threads[thread] = CognitiveAgent(
            ctx,
            llm,
            CognitiveConfig(system_prompt=ctx.config["system_prompt"], max_tokens=120),
            tools=[] if llm.name == "local" else ["fs:list_dir", "fs:read_file"],
        )
    result = await _threads[thread].run(event.payload["text"])
    await ctx.reply(
        event,
        "message" if result.success else "error",
        {
            "text": result.answer if result.success else result.error,
            "tokens": result.usage.total_tokens,
        },
    )

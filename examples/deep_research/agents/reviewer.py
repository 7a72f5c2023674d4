"""The reviewer: scores a draft with the LLM (structured output) and names revisions."""

from __future__ import annotations

from typing import Any

from loom.llm.auto import provider_for
from loom.patterns.roles import Review


async def on_event(ctx: Any, topic: str, event: Any) -> None:
    if event.type != "review":
        return
    p = event.payload
    draft = "\n\n".join(f"[{part['task']}]\n{part['content']}" for part in p["parts"])
    llm = provider_for(ctx, ctx.config.get("llm", "auto"))
    try:
        review = await llm.call_json(
            [
                {
                    "role": "system",
                    "content": "You review research drafts. Score 0-1 for accuracy and "
                    "clarity; approve if it is good enough; name sections to revise.",
                },
                {"role": "user", "content": f"Goal: {p['goal']}\n\nDraft:\n{draft}"},
            ],
            schema=Review,
        )
    except Exception as exc:  # the orchestrator treats an error reply as "review failed"
        await ctx.reply(event, "error", {"reason": str(exc)})
        return
    if review.score < float(ctx.config.get("min_score", 0.6)):
        review = review.model_copy(update={"approved": False})
    await ctx.reply(event, "review", review.model_dump())

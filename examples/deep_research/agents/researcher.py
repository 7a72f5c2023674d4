"""A researcher: writes one section from the sources it finds with the sandboxed
search and reads with the sandboxed file tool."""

from __future__ import annotations

import logging
import re
from typing import Any

from loom.cognitive import CognitiveAgent, CognitiveConfig
from loom.llm.auto import provider_for

log = logging.getLogger("research")


async def find_sources(ctx: Any, text: str, limit: int = 2) -> list[str]:
    words = [w for w in re.findall(r"[a-zA-Z]{5,}", text.lower())][:8]
    hits: dict[str, int] = {}
    for word in words:
        found = await ctx.tool(
            "fs:search", {"path": "sources", "content": word, "case_sensitive": False}
        )
        for r in found["results"]:
            path = r["path"] if r["path"].startswith("sources/") else f"sources/{r['path']}"
            hits[path] = hits.get(path, 0) + 1
    ranked = sorted(hits, key=lambda p: -hits[p])
    if not ranked:
        listing = await ctx.tool("fs:list_dir", {"path": "sources"})
        ranked = [f"sources/{e['name']}" for e in listing["entries"] if e["kind"] == "file"]
    return ranked[:limit]


async def on_event(ctx: Any, topic: str, event: Any) -> None:
    if event.type != "work":
        return
    task = event.payload["task"]
    goal = event.payload["goal"]
    sources = await find_sources(ctx, f"{task['name']} {task['instructions']} {goal}")
    texts = [(await ctx.tool("fs:read_file", {"path": s}))["content"] for s in sources]
    log.info("%s: section %r from %s", ctx.agent_id, task["name"], ", ".join(sources))
    feedback = event.payload.get("feedback") or ""
    llm = provider_for(ctx, ctx.config.get("llm", "auto"))
    writer = CognitiveAgent(
        ctx,
        llm,
        CognitiveConfig(
            system_prompt="You write one short section of a research report from the "
            "sources given.",
            max_iterations=1,
            max_tokens=200,
            temperature=0.3,
        ),
        tools=[],
    )
    goal_text = f"Write the section '{task['name']}': {task['instructions']} (report: {goal})"
    if feedback:
        goal_text += f"\nReviewer feedback to address: {feedback}"
    result = await writer.run(goal_text, context="\n\n".join(texts))
    if not result.success:
        await ctx.reply(event, "error", {"reason": f"{ctx.agent_id}: {result.error}"})
        return
    cited = ", ".join(sources)
    await ctx.reply(event, "result", {"content": f"{result.answer.strip()}\n\nSources: {cited}"})

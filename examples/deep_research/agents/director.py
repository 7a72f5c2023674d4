"""The director: plans sections, runs researchers and the reviewer over the bus
(``loom.patterns.BusOrchestrator``), writes the approved (or best) draft."""

from __future__ import annotations

import logging
from typing import Any

from loom.llm.auto import provider_for
from loom.patterns import BusOrchestrator

log = logging.getLogger("research")


async def on_event(ctx: Any, topic: str, event: Any) -> None:
    question = (event.payload or {}).get("question", "")
    llm = provider_for(ctx, ctx.config.get("llm", "auto"))
    orchestrator = BusOrchestrator(
        ctx,
        workers="research.section",
        reviewers="research.review",
        llm=llm,  # plans the sections
        max_revisions=int(ctx.config.get("max_revisions", 1)),
        max_tasks=int(ctx.config.get("max_tasks", 3)),
        timeout=600,
    )
    try:
        result = await orchestrator.run(question)
    except Exception as exc:
        log.exception("director: research failed")
        await ctx.reply(event, "error", {"reason": f"{type(exc).__name__}: {exc}"})
        return
    sections = "\n\n".join(f"## {p.task}\n\n{p.content.strip()}" for p in result.parts)
    verdict = "approved" if result.approved else f"not approved ({result.stop_reason})"
    report = f"# {question}\n\n{sections}\n\n---\nReview: score {result.score:.2f}, {verdict}.\n"
    await ctx.tool("fs:write_file", {"path": "deep-research.md", "content": report})
    log.info(
        "director: %d section(s), %s after %d revision(s)",
        len(result.parts),
        verdict,
        result.revisions,
    )
    await ctx.reply(
        event,
        "report",
        {
            "summary": f"Report: workspace/deep-research.md ({len(result.parts)} sections, "
            f"score {result.score:.2f}, {verdict}, {result.revisions} revision(s))",
            "approved": result.approved,
            "sections": [p.task for p in result.parts],
        },
    )

"""The lead: finds the relevant sources with the sandboxed search, farms them out to
researchers by contract-net, and writes the report from their notes."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from typing import Any

from loom.cognitive import CognitiveAgent, CognitiveConfig
from loom.llm.auto import provider_for

log = logging.getLogger("desk")

_STOP = set(
    "a an and are as at be by do does for from how in is it of on or the to what why with".split()
)


def keywords(question: str) -> list[str]:
    words = [w for w in re.findall(r"[a-zA-Z]{3,}", question.lower()) if w not in _STOP]
    return list(dict.fromkeys(words))


async def on_event(ctx: Any, topic: str, event: Any) -> None:
    if not event.reply_to:
        return
    try:
        await ctx.reply(event, "report", await write_report(ctx, event.payload or {}))
    except Exception as exc:
        log.exception("lead: the job failed")
        await ctx.reply(event, "error", {"reason": f"{type(exc).__name__}: {exc}"})


async def write_report(ctx: Any, job: dict[str, Any]) -> dict[str, Any]:
    question = job.get("question") or "What is this about?"
    folder = job.get("sources", "sources")
    listing = await ctx.tool("fs:list_dir", {"path": folder})
    files = sorted(
        f"{folder}/{e['name']}"
        for e in listing["entries"]
        if e["kind"] == "file" and e["name"].endswith((".md", ".txt"))
    )
    if not files:
        raise RuntimeError(f"no .md/.txt sources in workspace/{folder}")
    hits: Counter[str] = Counter()
    for word in keywords(question)[:6]:
        found = await ctx.tool(
            "fs:search", {"path": folder, "content": word, "case_sensitive": False}
        )
        hits.update(
            r["path"] if r["path"].startswith(folder) else f"{folder}/{r['path']}"
            for r in found["results"]
        )
    ranked = sorted(files, key=lambda f: -hits[f])
    chosen = [f for f in ranked if hits[f]][: int(job.get("max_sources", 3))] or ranked[:3]
    log.info("lead: question %r -> %d source(s): %s", question, len(chosen), ", ".join(chosen))

    outcomes = await asyncio.gather(
        *(
            ctx.contract_net(
                "desk.research", {"source": f, "question": question}, window=0.3, timeout=600
            )
            for f in chosen
        ),
        return_exceptions=True,
    )
    notes = []
    for f, outcome in zip(chosen, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            log.warning("lead: %s failed: %s", f, outcome)
        elif outcome.result.type != "result":
            log.warning("lead: %s failed: %s", f, outcome.result.payload.get("reason"))
        else:
            notes.append(outcome.result.payload)
            log.info("lead: %s done by %s", f, outcome.winner)
    if not notes:
        raise RuntimeError("every researcher failed; see the log above")

    llm = provider_for(ctx, ctx.config.get("llm", "auto"))
    writer = CognitiveAgent(
        ctx,
        llm,
        CognitiveConfig(
            system_prompt=ctx.prompts.load("writer.txt"),
            max_iterations=1,
            max_tokens=int(ctx.config.get("max_tokens", 220)),
            temperature=0.2,
        ),
        tools=[],
    )
    context = "\n\n".join(f"From {n['source']}: {n['answer']}" for n in notes)
    summary = await writer.run(f"Answer the question in one paragraph: {question}", context=context)
    if not summary.success:
        raise RuntimeError(f"writing the report failed: {summary.error}")
    body = summary.answer.strip() or "(the model returned no text)"
    report = [f"# {question}", "", body, "", "## Sources", ""]
    report += [f"- `{n['source']}` ({n['by']}, note: `{n['note']}`): {n['answer']}" for n in notes]
    await ctx.tool("fs:write_file", {"path": "report.md", "content": "\n".join(report) + "\n"})

    prompt = summary.usage.prompt_tokens + sum(n["prompt_tokens"] for n in notes)
    completion = summary.usage.completion_tokens + sum(n["completion_tokens"] for n in notes)
    cost = summary.cost_usd + sum(n["cost_usd"] for n in notes)
    workspace = ctx.project.workspace.root if ctx.project else "workspace"
    note_paths = ", ".join(f"{workspace}/{n['note']}" for n in notes)
    return {
        "summary": (
            f"Report:   {workspace}/report.md\n"
            f"Notes:    {note_paths}\n"
            f"Model:    {llm.name} ({llm.model})\n"
            f"Tokens:   {prompt + completion} ({prompt} in, {completion} out)\n"
            f"Cost:     ${cost:.6f}"
        ),
        "report": f"{workspace}/report.md",
        "notes": [n["note"] for n in notes],
        "provider": llm.name,
        "model": llm.model,
        "tokens": {"prompt": prompt, "completion": completion},
        "cost_usd": cost,
    }

"""A researcher: bids for sources, reads its award through the sandboxed file tools
with a CognitiveAgent, writes a note into the workspace, and replies with it."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import PurePosixPath
from typing import Any

from loom.cognitive import CognitiveAgent, CognitiveConfig
from loom.llm.auto import provider_for

log = logging.getLogger("desk")

# Work in hand and bids out, per researcher: the bid's cost, so awards spread out.
_load: dict[str, float] = defaultdict(float)
_llms: dict[str, Any] = {}


def _llm(ctx: Any) -> Any:
    if ctx.agent_id not in _llms:
        _llms[ctx.agent_id] = provider_for(ctx, ctx.config.get("llm", "auto"))
    return _llms[ctx.agent_id]


async def on_event(ctx: Any, topic: str, event: Any) -> None:
    if event.type == "cfp":
        _load[ctx.agent_id] += 0.5
        await ctx.reply(event, "bid", {"cost": _load[ctx.agent_id]})
    elif event.type == "reject":
        _load[ctx.agent_id] -= 0.5
    elif event.type == "award":
        _load[ctx.agent_id] += 0.5
        try:
            await ctx.reply(event, "result", await research(ctx, event.payload))
        except Exception as exc:
            log.exception("%s: research on %s failed", ctx.agent_id, event.payload)
            await ctx.reply(event, "error", {"reason": str(exc)})
        finally:
            _load[ctx.agent_id] -= 1.0


async def research(ctx: Any, task: dict[str, Any]) -> dict[str, Any]:
    source, question = task["source"], task["question"]
    llm = _llm(ctx)
    log.info("%s: reading %s", ctx.agent_id, source)
    reader = CognitiveAgent(
        ctx,
        llm,
        CognitiveConfig(
            system_prompt=ctx.prompts.load("researcher.txt"),
            max_iterations=3,
            max_tokens=int(ctx.config.get("max_tokens", 160)),
            temperature=0.2,
            # Read first (forced: small local models need it), then answer.
            tool_choice=[{"type": "function", "function": {"name": "fs__read_file"}}, "none"],
        ),
        tools=["fs:read_file"],
    )
    result = await reader.run(
        f'Use fs__read_file with {{"path": "{source}"}} to read the file, then answer: {question}'
    )
    usage = result.usage
    cost = result.cost_usd
    if not result.success and not result.tool_calls:
        raise RuntimeError(f"{ctx.agent_id}: {result.error}")  # the model is unreachable
    if not any(s.tool == "fs:read_file" and s.error is None for s in result.tool_calls):
        # A tiny model may mangle the path: read it ourselves (still sandboxed) and ask.
        log.info("%s: the model did not read %s; reading it for it", ctx.agent_id, source)
        text = (await ctx.tool("fs:read_file", {"path": source}))["content"]
        result = await CognitiveAgent(
            ctx, llm, reader.config.model_copy(update={"tool_choice": None}), tools=[]
        ).run(f"Answer from this text: {question}", context=text)
        usage = usage.model_copy(
            update={
                "prompt_tokens": usage.prompt_tokens + result.usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens + result.usage.completion_tokens,
            }
        )
        cost += result.cost_usd
    if not result.success:
        raise RuntimeError(f"{ctx.agent_id}: {result.error}")
    answer = result.answer.strip() or "(no answer)"
    note = f"# Notes on {source}\n\nQuestion: {question}\n\n{answer}\n"
    path = f"notes/{PurePosixPath(source).stem}.md"
    await ctx.tool("fs:write_file", {"path": path, "content": note})
    log.info("%s: wrote %s", ctx.agent_id, path)
    return {
        "source": source,
        "note": path,
        "answer": answer,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost_usd": cost,
        "by": ctx.agent_id,
    }

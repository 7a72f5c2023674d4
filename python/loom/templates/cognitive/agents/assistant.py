"""A cognitive agent: reads files through the sandboxed tools, then answers."""

from loom.cognitive import CognitiveAgent, CognitiveConfig
from loom.llm.auto import provider_for

_agents = {}


def cognitive(ctx):
    if ctx.agent_id not in _agents:
        llm = provider_for(ctx, ctx.config.get("llm", "auto"))
        # The tiny local model needs its read forced and then its answer; a real model
        # decides for itself.
        forced = [{"type": "function", "function": {"name": "fs__read_file"}}, "none"]
        config = CognitiveConfig(
            system_prompt=ctx.prompts.load(ctx.config["system_prompt"]),
            max_iterations=4,
            max_tokens=200,
            tool_choice=forced if llm.name == "local" else None,
        )
        _agents[ctx.agent_id] = CognitiveAgent(ctx, llm, config, tools=ctx.config["tools"])
    return _agents[ctx.agent_id]


async def on_event(ctx, topic, event):
    ask = event.payload or {}
    goal = ask.get("question", "")
    if ask.get("file"):
        goal += f' (use fs__read_file with {{"path": "{ask["file"]}"}})'
    result = await cognitive(ctx).run(goal)
    await ctx.reply(
        event,
        "answer" if result.success else "error",
        {
            "summary": result.answer if result.success else f"failed: {result.error}",
            "tools": [s.tool for s in result.tool_calls],
            "tokens": result.usage.total_tokens,
        },
    )

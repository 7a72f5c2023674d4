"""CognitiveAgent end to end on the real local model server (SmolLM2-135M on
llama.cpp). The model is tiny, so tool calls are forced with a named tool_choice and the
tests assert structure (tools really ran, events came in order), never wording."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from pydantic import Field

from loom import Agent, Runtime
from loom.cognitive import CognitiveAgent, CognitiveConfig, RunFinished, ToolResult
from loom.llm import LLMConfig, LLMProvider, TextDelta, ToolCallStart
from loom.tools import ApprovalRequest, PythonTool

pytestmark = pytest.mark.timeout(300)

FORCE_LOOKUP = {"type": "function", "function": {"name": "notes__lookup"}}
calls: list[str] = []


def lookup(topic: Annotated[str, Field(max_length=40)]) -> dict[str, str]:
    """Looks a topic up in the team's notes.

    Args:
        topic: What to look up.
    """
    calls.append(topic)
    return {"topic": topic, "note": "Loom runs agents on an event bus."}


@pytest.fixture
async def llm(smollm2: Any) -> AsyncIterator[LLMProvider]:
    provider = LLMProvider(
        None,
        LLMConfig(
            name="smollm2",
            base_url=smollm2.base_url,
            model=smollm2.model,
            max_tokens=160,
            temperature=0.0,
            max_concurrency=1,
            timeout=120,
        ),
    )
    yield provider
    await provider.aclose()


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    rt = Runtime()
    a = Agent("thinker", tools=[PythonTool(lookup, name="notes:lookup")], runtime=rt)
    await a.start()
    calls.clear()
    yield a
    await rt.stop(timeout=5)


def config(**kw: Any) -> CognitiveConfig:
    kw.setdefault("tool_choice", [FORCE_LOOKUP, "none"])
    kw.setdefault("max_tokens", 160)
    kw.setdefault("temperature", 0.0)
    return CognitiveConfig(**kw)


async def test_run_calls_a_real_tool_and_finishes(agent: Agent, llm: LLMProvider) -> None:
    cog = CognitiveAgent(agent.ctx, llm, config(), tools=["notes:lookup"])
    result = await cog.run("What do the notes say about Loom?")
    assert result.success, result.error
    assert result.iterations == 2
    step = result.tool_calls[0]
    assert step.tool == "notes:lookup" and step.error is None
    assert step.result["note"] == "Loom runs agents on an event bus."
    assert len(calls) == 1, "the Python tool really ran once"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert result.answer.strip()


async def test_stream_events_arrive_in_order(agent: Agent, llm: LLMProvider) -> None:
    cog = CognitiveAgent(agent.ctx, llm, config(), tools=["notes:lookup"])
    events = [e async for e in cog.run_stream("Look up Loom, then answer briefly.")]
    kinds = [type(e).__name__ for e in events]
    assert kinds[-1] == "RunFinished"
    first_start = kinds.index("ToolCallStart")
    first_result = kinds.index("ToolResult")
    assert first_start < first_result < kinds.index("TextDelta")
    result = events[-1]
    assert isinstance(result, RunFinished) and result.result.success
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert streamed.strip() == result.result.answer.strip()
    start = next(e for e in events if isinstance(e, ToolCallStart))
    done = next(e for e in events if isinstance(e, ToolResult))
    assert done.name == "notes:lookup" and start.index == 0


async def test_approval_denied_then_granted(agent: Agent, llm: LLMProvider) -> None:
    registry = await agent.runtime.get_tools()
    registry.require_approval.add("notes:lookup")
    seen: list[ApprovalRequest] = []

    async def deny(req: ApprovalRequest) -> bool:
        seen.append(req)
        return False

    registry.approver = deny
    denied = await CognitiveAgent(agent.ctx, llm, config(), tools=["notes:lookup"]).run(
        "Look up Loom."
    )
    assert denied.success  # the model is told and answers anyway
    assert denied.tool_calls[0].error is not None and "ToolDenied" in denied.tool_calls[0].error
    assert calls == [] and seen and seen[0].tool == "notes:lookup"

    def grant(req: ApprovalRequest) -> bool:
        time.sleep(0.05)  # a blocking prompt runs off the loop
        return True

    registry.approver = grant
    granted = await CognitiveAgent(agent.ctx, llm, config(), tools=["notes:lookup"]).run(
        "Look up Loom."
    )
    assert granted.tool_calls[0].error is None and len(calls) == 1


async def test_iteration_limit_on_a_real_model(agent: Agent, llm: LLMProvider) -> None:
    cog = CognitiveAgent(
        agent.ctx, llm, config(tool_choice=FORCE_LOOKUP, max_iterations=2), tools=["notes:lookup"]
    )
    result = await cog.run("Keep looking things up.")
    assert not result.success and result.iterations == 2
    assert len(result.tool_calls) == 2
    assert result.error is not None and "2 iterations" in result.error


async def test_memory_reaches_the_next_prompt(agent: Agent, llm: LLMProvider) -> None:
    no_tools = config(tool_choice=None, max_tokens=16)
    remembering = CognitiveAgent(agent.ctx, llm, no_tools, tools=[])
    await remembering.run("My project is called Zanzibar-42. Say ok.")
    second = await remembering.run("What is my project called?")
    fresh = await CognitiveAgent(agent.ctx, llm, no_tools, tools=[]).run(
        "What is my project called?"
    )
    assert second.success and fresh.success
    assert any("Zanzibar-42" in str(m["content"]) for m in remembering.memory.messages())
    # The server counted the remembered turns in the second prompt.
    assert second.usage.prompt_tokens > fresh.usage.prompt_tokens + 5

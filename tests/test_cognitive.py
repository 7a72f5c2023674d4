"""CognitiveAgent on the scripted model: tool calls, concurrency, limits, memory,
approvals, streaming, and the ReAct parser."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from loom import Agent, Runtime
from loom.cognitive import CognitiveAgent, CognitiveConfig, RunFinished, ToolResult, react
from loom.llm import TextDelta, ToolCallStart
from loom.testing import FunctionModel, ScriptedModel, tool_call
from loom.tools import ApprovalRequest, PythonTool


def notes_tool() -> PythonTool:
    async def lookup(topic: str) -> dict[str, str]:
        """Looks a topic up in the notes."""
        await asyncio.sleep(0.2)
        return {"topic": topic, "note": f"{topic} is important"}

    return PythonTool(lookup, name="notes:lookup")


async def test_native_tool_calls_run_concurrently_and_finish(runtime: Runtime) -> None:
    llm = ScriptedModel(
        [
            [tool_call("notes__lookup", topic="a"), tool_call("notes:lookup", topic="b")],
            "Both are important.",
        ]
    )
    async with Agent("thinker") as agent:
        cog = CognitiveAgent(agent.ctx, llm, tools=[notes_tool()])
        start = time.monotonic()
        result = await cog.run("What do the notes say about a and b?")
        elapsed = time.monotonic() - start
    assert result.success and result.answer == "Both are important."
    assert result.iterations == 2
    assert [s.tool for s in result.tool_calls] == ["notes:lookup", "notes:lookup"]
    assert [s.result["topic"] for s in result.tool_calls] == ["a", "b"]
    assert elapsed < 0.35, f"two 0.2 s tools ran concurrently, took {elapsed:.2f}s"
    # The model saw the tool results as tool messages with matching ids.
    second = llm.calls[1].messages
    tool_msgs = [m for m in second if m["role"] == "tool"]
    assert len(tool_msgs) == 2 and "a is important" in tool_msgs[0]["content"]
    assistant = next(m for m in second if m["role"] == "assistant")
    assert assistant["content"] == "" and len(assistant["tool_calls"]) == 2
    assert llm.calls[0].tools and llm.calls[0].tools[0]["function"]["name"] == "notes__lookup"
    assert result.usage.total_tokens > 0


async def test_tool_errors_reach_the_model_and_are_recorded(runtime: Runtime) -> None:
    llm = ScriptedModel(
        [tool_call("notes:lookup", wrong="x"), tool_call("nope:missing"), "gave up"]
    )
    async with Agent("t") as agent:
        result = await CognitiveAgent(agent.ctx, llm, tools=[notes_tool()]).run("go")
    assert result.success and result.answer == "gave up"
    errors = [s.error for s in result.tool_calls]
    assert errors[0] is not None and "ToolArgumentsInvalid" in errors[0]
    assert errors[1] is not None and "ToolNotFound" in errors[1]
    assert "error: ToolArgumentsInvalid" in llm.calls[1].messages[-1]["content"]


async def test_iteration_limit_gives_a_clear_result(runtime: Runtime) -> None:
    llm = ScriptedModel([tool_call("notes:lookup", topic="x")], repeat_last=True)
    async with Agent("t") as agent:
        cog = CognitiveAgent(
            agent.ctx, llm, CognitiveConfig(max_iterations=3), tools=[notes_tool()]
        )
        result = await cog.run("loop forever")
    assert not result.success
    assert result.iterations == 3 and len(result.tool_calls) == 3
    assert result.error is not None and "3 iterations" in result.error


async def test_memory_carries_across_runs_and_compacts(runtime: Runtime) -> None:
    llm = FunctionModel(lambda call: f"answer {len(call.messages)}")
    cog = CognitiveAgent(
        None, llm, CognitiveConfig(memory_tokens=200, llm_compaction=False), tools=[]
    )
    await cog.run("My name is Ada.")
    second = await cog.run("What is my name?")
    assert second.success
    seen = " ".join(str(m["content"]) for m in llm.calls[1].messages)
    assert "My name is Ada." in seen, "the first run's goal reached the second prompt"
    for i in range(30):
        await cog.run(f"filler message number {i} " + "x" * 80)
    assert cog.memory.summary, "old turns were compacted into a summary"
    assert cog.memory.tokens() <= 200 + 60
    last_prompt = " ".join(str(m["content"]) for m in llm.calls[-1].messages)
    assert "Summary of the earlier conversation" in last_prompt


async def test_llm_compaction_uses_the_model(runtime: Runtime) -> None:
    def respond(call):  # type: ignore[no-untyped-def]
        if "Summarise" in str(call.messages[0]["content"]):
            return "SUMMARY: user likes tea"
        return "ok " + "y" * 200

    cog = CognitiveAgent(None, FunctionModel(respond), CognitiveConfig(memory_tokens=200), tools=[])
    for i in range(6):
        await cog.run(f"turn {i} " + "z" * 100)
    assert cog.memory.summary.startswith("SUMMARY")


async def test_large_tool_output_is_offloaded(runtime: Runtime, tmp_path: Path) -> None:
    def big() -> str:
        return "B" * 10_000

    llm = ScriptedModel([tool_call("local:big"), "done"])
    async with Agent("t") as agent:
        cog = CognitiveAgent(
            agent.ctx, llm, CognitiveConfig(offload_chars=1000, preview_chars=100), tools=[big]
        )
        cog.memory.cache_dir = tmp_path
        result = await cog.run("read it")
    assert result.success
    shown = llm.calls[1].messages[-1]["content"]
    assert len(shown) < 400 and "saved to" in shown
    saved = list(tmp_path.glob("tool-output-*.txt"))
    assert len(saved) == 1 and saved[0].read_text() == "B" * 10_000


async def test_approval_denied_and_granted(runtime: Runtime) -> None:
    def danger(target: str) -> str:
        return f"did {target}"

    tool = PythonTool(danger, name="danger:do")
    async with Agent("t", tools=[tool]) as agent:
        registry = await runtime.get_tools()
        registry.require_approval.add("danger:do")
        asked: list[ApprovalRequest] = []

        async def deny(req: ApprovalRequest) -> bool:
            asked.append(req)
            return False

        registry.approver = deny
        llm = ScriptedModel([tool_call("danger:do", target="x"), "not allowed"])
        denied = await CognitiveAgent(agent.ctx, llm, tools=["danger:do"]).run("do it")
        assert denied.tool_calls[0].error is not None
        assert "ToolDenied" in denied.tool_calls[0].error
        assert asked[0].arguments == {"target": "x"}

        def grant(req: ApprovalRequest) -> bool:
            time.sleep(0.05)  # a blocking prompt: runs off the loop
            return True

        registry.approver = grant
        llm2 = ScriptedModel([tool_call("danger:do", target="y"), "done"])
        granted = await CognitiveAgent(agent.ctx, llm2, tools=["danger:do"]).run("do it")
        assert granted.tool_calls[0].result == "did y"


async def test_stream_events_in_order(runtime: Runtime) -> None:
    llm = ScriptedModel([tool_call("notes:lookup", topic="z"), "The answer is z."])
    async with Agent("t") as agent:
        cog = CognitiveAgent(agent.ctx, llm, tools=[notes_tool()])
        events = [e async for e in cog.run_stream("z?")]
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ToolCallStart") < kinds.index("ToolResult") < kinds.index("TextDelta")
    assert isinstance(events[-1], RunFinished) and events[-1].result.success
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "The answer is z."
    start = next(e for e in events if isinstance(e, ToolCallStart))
    res = next(e for e in events if isinstance(e, ToolResult))
    assert start.name in ("notes:lookup", "notes__lookup") and res.result["topic"] == "z"


async def test_react_mode_runs_tools_from_text(runtime: Runtime) -> None:
    llm = ScriptedModel(
        [
            'Thought: I have {no idea} yet.\nAction: notes:lookup\nAction Input: {"topic": "q"}',
            "I am confused",
            "Final Answer: q is important",
        ]
    )
    async with Agent("t") as agent:
        cog = CognitiveAgent(
            agent.ctx, llm, CognitiveConfig(tool_mode="react"), tools=[notes_tool()]
        )
        result = await cog.run("q?")
    assert result.success and result.answer == "q is important"
    assert result.tool_calls[0].result["topic"] == "q"
    assert "Observation:" in llm.calls[1].messages[-1]["content"]
    assert "did not follow the format" in llm.calls[2].messages[-1]["content"]
    assert "Action Input" in llm.calls[0].messages[0]["content"]
    assert llm.calls[0].tools in (None, [])


@pytest.mark.parametrize(
    ("text", "kind", "tool", "args"),
    [
        ('Action: fs:read\nAction Input: {"path": "a"}', "action", "fs:read", {"path": "a"}),
        (
            'I think {this} matters.\nAction: a:b\nAction Input: {"x": {"y": 1}} trailing',
            "action",
            "a:b",
            {"x": {"y": 1}},
        ),
        ('Action: a:b\nAction Input: ```json\n{"k": "}"}\n```', "action", "a:b", {"k": "}"}),
        ("Final Answer: 42", "final", "", None),
        (
            'Action: a:b\nAction Input: {"x": 1}\nObservation: ...\nFinal Answer: done',
            "final",
            "",
            None,
        ),
        ("Action: a:b\nAction Input: [1, 2]", "invalid", "a:b", None),
        ("Action: a:b\nAction Input: {broken", "invalid", "a:b", None),
        ("Action: a:b", "invalid", "a:b", None),
        ("just {prose} with braces", "invalid", "", None),
        ("**Action**: a:b\n**Action Input**: {}", "action", "a:b", {}),
    ],
)
def test_react_parser(text: str, kind: str, tool: str, args: dict[str, object] | None) -> None:
    step = react.parse(text)
    assert step.kind == kind, step
    assert step.tool == tool
    if args is not None:
        assert step.arguments == args

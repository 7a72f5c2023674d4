"""Cognitive code written for the original Loom, run unchanged: the seed's call-only
MockLLM, ``available_tools`` and ``permission_callback`` on real sandboxed tools, the
original ``CognitiveConfig`` fields, ``CognitiveResult.total_latency_ms``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import loom
from loom import Agent, Runtime, ToolNotFound
from loom.cognitive import (
    CognitiveAgent,
    CognitiveConfig,
    CognitiveResult,
    RunFinished,
    ThinkingStrategy,
    ToolResult,
)
from loom.config import parse_project_config
from loom.llm import LLMResponse, TextDelta
from loom.testing import ScriptedModel, tool_call
from loom.tools import PythonTool

# -- the seed's test double, verbatim ("Mock LLM for Tests") ---------------------------


class MockLLM:
    async def call(self, messages, **kwargs):
        return LLMResponse(
            content="Mock response",
            finish_reason="stop",
            usage={"prompt_tokens": 10, "completion_tokens": 5},
        )


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    """An agent on a project whose workspace holds notes.md (real fs:* tools)."""
    (tmp_path / "loom.toml").write_text('[workspace]\nroot = "ws"\n')
    project = parse_project_config((tmp_path / "loom.toml").read_text(), tmp_path / "loom.toml")
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "notes.md").write_text("Loom runs agents on an event bus.\n")
    rt = Runtime(project)
    a = Agent(agent_id="researcher", topics=["tasks"], runtime=rt)
    await a.start()
    yield a
    await rt.stop(timeout=5)


def ws(agent: Agent) -> Path:
    return Path(agent.ctx.project.root) / "ws"


# -- the call-only model ----------------------------------------------------------------


async def test_the_seeds_mock_llm_runs_and_remembers(agent: Agent) -> None:
    cognitive = CognitiveAgent(ctx=agent.ctx, llm=MockLLM())
    result = await cognitive.run("Research AI frameworks")
    assert result.success and result.answer == "Mock response"
    assert result.usage.prompt_tokens == 10 and result.usage.completion_tokens == 5
    assert result.usage.total_tokens == 15
    # The memory counted tokens without count_tokens (Loom's estimate instead).
    assert cognitive.memory.tokens() > 0
    second = await cognitive.run("And again?")
    assert second.success and len(cognitive.memory.history) == 4


async def test_the_seeds_mock_llm_streams(agent: Agent) -> None:
    cognitive = CognitiveAgent(ctx=agent.ctx, llm=MockLLM())
    events = [e async for e in cognitive.run_stream("Research AI frameworks")]
    assert [type(e).__name__ for e in events] == ["TextDelta", "RunFinished"]
    assert isinstance(events[0], TextDelta) and events[0].text == "Mock response"
    assert isinstance(events[-1], RunFinished) and events[-1].result.answer == "Mock response"


async def test_memory_compaction_needs_only_call(runtime: Runtime) -> None:
    cognitive = CognitiveAgent(None, MockLLM(), CognitiveConfig(memory_tokens=200), tools=[])
    for i in range(12):
        result = await cognitive.run(f"turn {i} " + "z" * 120)
        assert result.success
    # The summary was written by the mock's call() (llm_compaction is on by default).
    assert cognitive.memory.summary == "Mock response"


async def test_a_model_without_call_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="async call"):
        CognitiveAgent(None, object())  # type: ignore[arg-type]


async def test_a_call_that_returns_text_or_junk(runtime: Runtime) -> None:
    class Texts:
        async def call(self, messages: Any, **kwargs: Any) -> Any:
            return "plain text"

    class Junk:
        async def call(self, messages: Any, **kwargs: Any) -> Any:
            return 42

    ok = await CognitiveAgent(None, Texts(), tools=[]).run("hi")
    assert ok.success and ok.answer == "plain text"
    bad = await CognitiveAgent(None, Junk(), tools=[]).run("hi")
    assert not bad.success and bad.error is not None and "not an LLMResponse" in bad.error


# -- available_tools -------------------------------------------------------------------


async def test_available_tools_limits_what_is_offered_and_run(agent: Agent) -> None:
    llm = ScriptedModel(
        [
            [
                tool_call("fs:read_file", path="notes.md"),
                tool_call("fs__write_file", path="evil.md", content="x"),
            ],
            "It runs agents on an event bus.",
        ]
    )
    cognitive = CognitiveAgent(
        ctx=agent.ctx,
        llm=llm,
        config=CognitiveConfig(max_iterations=3),
        available_tools=["fs:read_file"],
    )
    result = await cognitive.run("What do the notes say?")
    assert result.success
    assert [t["function"]["name"] for t in llm.calls[0].tools or []] == ["fs__read_file"]
    read, write = result.tool_calls
    assert read.result["content"].startswith("Loom runs agents")
    assert write.tool == "fs:write_file" and write.result is None
    assert write.error is not None and "not one of this agent's tools" in write.error
    assert "fs:read_file" in write.error
    assert not (ws(agent) / "evil.md").exists(), "a tool outside the list ran"
    shown = [m["content"] for m in llm.calls[1].messages if m["role"] == "tool"]
    assert shown[1].startswith("error: ToolDenied") and "was not run" in shown[1]


async def test_no_tools_means_none_run_even_if_the_model_asks(agent: Agent) -> None:
    llm = ScriptedModel([tool_call("fs:write_file", path="evil.md", content="x"), "ok"])
    result = await CognitiveAgent(agent.ctx, llm, available_tools=[]).run("go")
    assert result.tool_calls[0].error is not None
    assert "may call no tools" in result.tool_calls[0].error
    assert not (ws(agent) / "evil.md").exists()


async def test_available_tools_patterns(agent: Agent) -> None:
    registry = await agent.ctx.runtime.get_tools()
    fs_names = sorted(s.name for s in registry.specs() if s.name.startswith("fs:"))
    assert "fs:read_file" in fs_names
    cognitive = CognitiveAgent(agent.ctx, ScriptedModel(["ok"]), available_tools=["fs:*"])
    offered = [t["function"]["name"] for t in await cognitive.offered_tools()]
    assert sorted(n.replace("__", ":") for n in offered) == fs_names
    nothing = CognitiveAgent(agent.ctx, ScriptedModel(["ok"]), available_tools=["web:*"])
    with pytest.raises(ToolNotFound, match="no registered tool matches"):
        await nothing.run("go")


def test_tools_and_available_tools_are_one_setting() -> None:
    with pytest.raises(TypeError, match="not both"):
        CognitiveAgent(None, MockLLM(), tools=["a:b"], available_tools=["a:b"])
    with pytest.raises(TypeError, match="not the string"):
        CognitiveAgent(None, MockLLM(), available_tools="fs:read_file")


# -- permission_callback ---------------------------------------------------------------


def write_then_answer() -> ScriptedModel:
    return ScriptedModel([tool_call("fs:write_file", path="out.md", content="hi"), "done"])


async def test_a_sync_callback_that_says_no(agent: Agent) -> None:
    asked: list[tuple[str, dict[str, Any], bool]] = []

    def permission(tool_name: str, arguments: dict[str, Any]) -> bool:
        asked.append((tool_name, arguments, threading.current_thread() is threading.main_thread()))
        return False

    llm = write_then_answer()
    result = await CognitiveAgent(
        agent.ctx, llm, available_tools=["fs:write_file"], permission_callback=permission
    ).run("write it")
    assert asked == [("fs:write_file", {"path": "out.md", "content": "hi"}, False)]
    step = result.tool_calls[0]
    assert step.error == "ToolDenied: permission_callback denied the call"
    assert not (ws(agent) / "out.md").exists()
    assert "permission_callback denied" in llm.calls[1].messages[-1]["content"]
    assert result.success and result.answer == "done"


async def test_an_async_callback_that_says_yes(agent: Agent) -> None:
    async def permission(tool_name: str, arguments: dict[str, Any]) -> bool:
        await asyncio.sleep(0)
        return tool_name == "fs:write_file"

    result = await CognitiveAgent(
        agent.ctx, write_then_answer(), available_tools=["fs:*"], permission_callback=permission
    ).run("write it")
    assert result.tool_calls[0].error is None
    assert (ws(agent) / "out.md").read_text() == "hi"


async def test_the_originals_three_argument_callback_gets_a_reason(agent: Agent) -> None:
    reasons: list[str] = []

    async def approval_callback(tool_name, args, error_msg):
        reasons.append(error_msg)
        return True

    cognitive = CognitiveAgent(
        ctx=agent.ctx,
        llm=write_then_answer(),
        available_tools=["fs:write_file"],
        permission_callback=approval_callback,
    )
    result = await cognitive.run("write it")
    assert result.tool_calls[0].error is None
    assert reasons and reasons[0].startswith("fs:write_file") and "out.md" in reasons[0]


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        (RuntimeError("closed"), "permission_callback failed: RuntimeError('closed')"),
        ("yes", "it returned 'yes', not True"),
    ],
)
async def test_a_failing_or_unclear_callback_denies(
    agent: Agent, verdict: object, expected: str
) -> None:
    def permission(tool_name: str, arguments: dict[str, Any]) -> object:
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    result = await CognitiveAgent(
        agent.ctx, write_then_answer(), available_tools=["fs:*"], permission_callback=permission
    ).run("write it")
    assert result.success, "the run went on"
    assert result.tool_calls[0].error is not None and expected in result.tool_calls[0].error
    assert not (ws(agent) / "out.md").exists()


async def test_the_callback_is_asked_before_every_call_one_at_a_time(agent: Agent) -> None:
    active = 0
    most = 0
    asked: list[str] = []

    async def permission(tool_name: str, arguments: dict[str, Any]) -> bool:
        nonlocal active, most
        active += 1
        most = max(most, active)
        asked.append(arguments["path"])
        await asyncio.sleep(0.02)
        active -= 1
        return True

    llm = ScriptedModel(
        [[tool_call("fs:read_file", path="notes.md") for _ in range(3)], "read thrice"]
    )
    result = await CognitiveAgent(
        agent.ctx, llm, available_tools=["fs:read_file"], permission_callback=permission
    ).run("read")
    assert asked == ["notes.md"] * 3 and most == 1
    assert all(s.error is None for s in result.tool_calls)


def test_a_permission_callback_must_be_callable() -> None:
    with pytest.raises(TypeError, match="permission_callback must be callable"):
        CognitiveAgent(None, MockLLM(), permission_callback="yes")  # type: ignore[arg-type]


# -- CognitiveConfig: the original fields, and no silently ignored ones ---------------


async def test_max_tools_per_step_caps_one_turn(runtime: Runtime) -> None:
    ran: list[str] = []

    def lookup(topic: str) -> str:
        ran.append(topic)
        return f"{topic}: noted"

    llm = ScriptedModel(
        [
            [tool_call("notes:lookup", topic=t) for t in ("a", "b", "c")],
            "two of three",
        ]
    )
    async with Agent("t") as a:
        cognitive = CognitiveAgent(
            a.ctx,
            llm,
            CognitiveConfig(max_tools_per_step=2),
            tools=[PythonTool(lookup, name="notes:lookup")],
        )
        events = [e async for e in cognitive.run_stream("look up a, b and c")]
    assert sorted(ran) == ["a", "b"]
    result = events[-1].result  # type: ignore[union-attr]
    assert [s.error is None for s in result.tool_calls] == [True, True, False]
    skipped = result.tool_calls[2]
    assert skipped.tool == "notes:lookup" and skipped.arguments == {"topic": "c"}
    assert skipped.error.startswith("not run: max_tools_per_step=2")
    tool_msgs = [m for m in llm.calls[1].messages if m["role"] == "tool"]
    assert len(tool_msgs) == 3 and "not run: max_tools_per_step" in tool_msgs[2]["content"]
    assert [e.error is None for e in events if isinstance(e, ToolResult)] == [True, True, False]


def test_thinking_strategy_values() -> None:
    assert loom.ThinkingStrategy is ThinkingStrategy
    assert CognitiveConfig().thinking_strategy is ThinkingStrategy.REACT
    for given, expected in [
        (ThinkingStrategy.REACT, ThinkingStrategy.REACT),
        ("react", ThinkingStrategy.REACT),
        ("ReAct", ThinkingStrategy.REACT),
        ("single-shot", ThinkingStrategy.SINGLE_SHOT),
        ("single_shot", ThinkingStrategy.SINGLE_SHOT),
        ("cot", ThinkingStrategy.CHAIN_OF_THOUGHT),
        ("chain_of_thought", ThinkingStrategy.CHAIN_OF_THOUGHT),
    ]:
        assert CognitiveConfig(thinking_strategy=given).thinking_strategy is expected
    with pytest.raises(ValidationError) as info:
        CognitiveConfig(thinking_strategy="tree_of_thought")
    err = info.value.errors()[0]
    assert err["loc"] == ("thinking_strategy",)
    assert "unknown thinking_strategy 'tree_of_thought'" in err["msg"]
    assert "expected one of 'react', 'single_shot', 'cot' (or 'single-shot'," in err["msg"]


def test_unknown_and_unsupported_settings_are_errors() -> None:
    with pytest.raises(ValidationError) as info:
        CognitiveConfig(max_iteration=3)  # type: ignore[call-arg]
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    assert info.value.errors()[0]["loc"] == ("max_iteration",)
    with pytest.raises(ValidationError, match="stop_on_final_answer=False is not supported"):
        CognitiveConfig(stop_on_final_answer=False)
    with pytest.raises(ValidationError, match="max_tools_per_step"):
        CognitiveConfig(max_tools_per_step=0)
    config = CognitiveConfig(
        system_prompt="You are a helpful assistant...",
        thinking_strategy=ThinkingStrategy.REACT,
        max_iterations=10,
        max_tools_per_step=3,
        temperature=0.7,
        stop_on_final_answer=True,
    )
    assert config.max_tools_per_step == 3 and config.stop_on_final_answer is True


async def test_single_shot_is_one_call_without_tools(agent: Agent) -> None:
    llm = ScriptedModel(["4"])
    cognitive = CognitiveAgent(
        agent.ctx,
        llm,
        CognitiveConfig(thinking_strategy="single_shot", max_iterations=5),
        available_tools=["fs:read_file"],
    )
    result = await cognitive.run("What is 2+2?")
    assert result.success and result.answer == "4" and result.iterations == 1
    assert len(llm.calls) == 1 and not llm.calls[0].tools
    assert await cognitive.offered_tools() == []
    # A model that asks for a tool anyway gets none run, and the run says why.
    asks = ScriptedModel([tool_call("fs:read_file", path="notes.md")])
    bad = await CognitiveAgent(
        agent.ctx, asks, CognitiveConfig(thinking_strategy="single_shot")
    ).run("read")
    assert not bad.success and not bad.tool_calls
    assert bad.error is not None and "thinking_strategy='single_shot' runs none" in bad.error


async def test_chain_of_thought_keeps_the_reasoning_apart(runtime: Runtime) -> None:
    llm = ScriptedModel(["Step 1: 2+2 is two pairs.\nStep 2: that is 4.\nFinal Answer: 4"])
    cognitive = CognitiveAgent(
        None, llm, CognitiveConfig(thinking_strategy=ThinkingStrategy.CHAIN_OF_THOUGHT)
    )
    result = await cognitive.run("What is 2+2?")
    assert result.success and result.answer == "4"
    assert [s.kind for s in result.steps] == ["thought", "answer"]
    assert result.steps[0].text.startswith("Step 1")
    assert "step by step" in llm.calls[0].messages[0]["content"]
    plain = await CognitiveAgent(
        None, ScriptedModel(["just 4"]), CognitiveConfig(thinking_strategy="cot")
    ).run("2+2?")
    assert plain.answer == "just 4"


# -- total_latency_ms ---------------------------------------------------------------------


async def test_total_latency_ms_is_the_runs_wall_clock(runtime: Runtime) -> None:
    class SlowMock:
        async def call(self, messages: Any, **kwargs: Any) -> LLMResponse:
            await asyncio.sleep(0.05)
            return LLMResponse(content="late", finish_reason="stop")

    cognitive = CognitiveAgent(None, SlowMock(), tools=[])
    before = time.perf_counter()
    result: CognitiveResult = await cognitive.run("hi")
    wall_ms = (time.perf_counter() - before) * 1000
    assert 50 <= result.total_latency_ms <= wall_ms
    assert result.total_latency_ms == pytest.approx(result.latency * 1000)


# -- loom chat passes [agents.x] thinking_strategy on ------------------------------------


@pytest.mark.parametrize(("value", "ok"), [("cot", True), ("tree", False)])
def test_loom_chat_takes_the_agents_thinking_strategy(tmp_path: Path, value: str, ok: bool) -> None:
    (tmp_path / "loom.toml").write_text(
        'name = "chat-app"\n\n[llm.test]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n\n'
        f'[agents.assistant]\nllm_provider = "test"\nthinking_strategy = "{value}"\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "loom.cli", "chat", "--agent", "assistant"],
        cwd=tmp_path,
        input="/tools\n/exit\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    if ok:
        assert r.returncode == 0, r.stderr
        assert "0 tool(s)" in r.stdout and "(no tools)" in r.stdout  # cot offers none
        assert "not supported" not in r.stdout
    else:
        assert r.returncode == 2
        assert "agents.assistant.thinking_strategy" in r.stderr
        assert "unknown thinking_strategy 'tree'" in r.stderr and "loom.toml:9" in r.stderr


# -- the examples in docs/agents.md ------------------------------------------------------


def doc_block(marker: str) -> str:
    import re

    doc = (Path(__file__).parent.parent / "docs" / "agents.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if marker in b]
    assert len(blocks) == 1, marker
    return blocks[0]


async def test_the_docs_mock_llm_example(agent: Agent) -> None:
    ns: dict[str, Any] = {"LLMResponse": LLMResponse, "CognitiveAgent": CognitiveAgent}
    ns["agent"] = agent
    exec(doc_block("class MockLLM"), ns)
    events = [e async for e in ns["cognitive"].run_stream("hi")]
    assert events[-1].result.answer == "Mock response"


async def test_the_docs_permission_example(agent: Agent) -> None:
    (ws(agent) / "old.md").write_text("x")
    llm = ScriptedModel([tool_call("fs:delete", path="old.md"), "kept"])
    ns: dict[str, Any] = {"CognitiveAgent": CognitiveAgent, "ctx": agent.ctx, "llm": llm}
    exec(doc_block("permission_callback=permission"), ns)
    result = await ns["cognitive"].run("delete old.md")
    assert result.tool_calls[0].error == "ToolDenied: permission_callback denied the call"
    assert (ws(agent) / "old.md").exists()

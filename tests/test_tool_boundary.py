"""The tool boundary answers with a ``LoomError``, never anything else: bad call
arguments (timeouts, payloads), tools that raise arbitrary exceptions, and values nested
too deeply — from Python code and from a model's tool call (native, streamed, ReAct)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from loom import (
    Agent,
    LoomError,
    Runtime,
    ToolArgumentsInvalid,
    ToolFailed,
)
from loom._depth import MAX_DEPTH
from loom.cognitive import CognitiveAgent, CognitiveConfig, RunFinished, ToolResult
from loom.config import parse_project_config
from loom.llm import LLMResponse, ToolCall
from loom.testing import ScriptedModel
from loom.tools import PythonTool, ToolRegistry, ToolSpec


def nested(depth: int, kind: str = "dict") -> Any:
    """A value ``depth`` levels deep (built iteratively: no recursion here either)."""
    inner: Any = 1
    for _ in range(depth):
        inner = {"a": inner} if kind == "dict" else [inner] if kind == "list" else (inner,)
    return inner


def nested_json(depth: int) -> str:
    return '{"a": ' * (depth - 1) + '{"a": 1' + "}" * depth


def echo_tool() -> PythonTool:
    def echo(value: Any = None) -> Any:
        """Returns its argument."""
        return value

    return PythonTool(echo, name="t:echo")


@pytest.fixture
async def project_agent(tmp_path: Path) -> Any:
    (tmp_path / "ws").mkdir()
    rt = Runtime(parse_project_config('[workspace]\nroot = "ws"\n', tmp_path / "loom.toml"))
    Runtime.set_default(rt)
    agent = Agent("caller", runtime=rt, tools=[echo_tool()])
    await agent.start()
    yield agent
    await agent.stop()
    await rt.stop(timeout=5)
    Runtime.set_default(None)


# -- ctx.tool's own arguments ------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, -1, -0.5, math.nan, math.inf, -math.inf, True, "5"])
@pytest.mark.parametrize("tool", ["fs:read_file", "t:echo"])
async def test_bad_timeouts_are_typed_and_name_the_argument(
    project_agent: Agent, tool: str, timeout: Any
) -> None:
    with pytest.raises(ToolArgumentsInvalid, match="timeout") as info:
        await project_agent.ctx.tool(tool, {"path": "x"} if tool[0] == "f" else {}, timeout=timeout)
    assert info.value.tool == tool


@pytest.mark.parametrize("payload", [[1, 2], "abc", 42, ["path", "x"], (("path", "x"),), b"{}"])
@pytest.mark.parametrize("tool", ["fs:read_file", "t:echo"])
async def test_a_payload_that_is_not_a_mapping_is_typed(
    project_agent: Agent, tool: str, payload: Any
) -> None:
    with pytest.raises(ToolArgumentsInvalid, match="payload") as info:
        await project_agent.ctx.tool(tool, payload)
    assert info.value.tool == tool


async def test_non_string_payload_keys_are_typed(project_agent: Agent) -> None:
    for tool in ("fs:read_file", "t:echo"):
        with pytest.raises(ToolArgumentsInvalid, match="payload"):
            await project_agent.ctx.tool(tool, {1: "x"})


async def test_good_calls_still_work(project_agent: Agent) -> None:
    assert await project_agent.ctx.tool("t:echo", {"value": nested(MAX_DEPTH - 1)}) == nested(
        MAX_DEPTH - 1
    )
    assert await project_agent.ctx.tool("t:echo", None, timeout=0.5) is None


# -- depth from Python --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dict", "list", "tuple"])
@pytest.mark.parametrize("tool", ["system:shell", "fs:write_file", "t:echo"])
async def test_too_deep_python_values_are_arguments_invalid(
    project_agent: Agent, tool: str, kind: str
) -> None:
    value = nested(3000, kind)
    payload = {"argv": ["echo", value]} if tool == "system:shell" else {"value": value}
    if tool == "fs:write_file":
        payload = {"path": "x.txt", "content": value}
    with pytest.raises(ToolArgumentsInvalid, match=f"deeper than {MAX_DEPTH} levels"):
        await project_agent.ctx.tool(tool, payload)
    # exactly at the limit (the payload itself is a level) passes the depth check
    ok = {"value": nested(MAX_DEPTH - 1, kind)}
    assert await project_agent.ctx.tool("t:echo", ok) is not None


async def test_a_value_that_contains_itself_is_arguments_invalid(project_agent: Agent) -> None:
    loop: list[Any] = []
    loop.append(loop)
    for tool, payload in (("t:echo", {"value": loop}), ("system:shell", {"argv": loop})):
        with pytest.raises(ToolArgumentsInvalid, match="levels"):
            await project_agent.ctx.tool(tool, payload)


@pytest.mark.parametrize("depth", [10_000, 100_000])
@pytest.mark.parametrize("kind", ["dict", "list"])
def test_deep_values_never_reach_the_core(tmp_path: Path, depth: int, kind: str) -> None:
    """In a child process: before the check, a value this deep crashed the interpreter
    (SIGSEGV in the core's recursive conversion) instead of raising."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from loom import Agent, Runtime, ToolArgumentsInvalid
        from loom.config import parse_project_config

        async def main():
            rt = Runtime(parse_project_config("", {str(tmp_path / "loom.toml")!r}))
            Runtime.set_default(rt)
            async with Agent("a", runtime=rt) as a:
                inner = 1
                for _ in range({depth}):
                    inner = {{"a": inner}} if {kind!r} == "dict" else [inner]
                for tool in ("system:shell", "fs:read_file"):
                    try:
                        await a.ctx.tool(tool, {{"argv": ["echo", inner], "path": inner}})
                    except ToolArgumentsInvalid as exc:
                        print("typed:", tool, exc.reason)
            await rt.stop()

        asyncio.run(main())
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.count("typed:") == 2 and "levels" in r.stdout, r.stdout


# -- the registry: any exception from a tool is a ToolFailed --------------------------------


class Raising:
    """A tool (the registry's protocol, not @tool) whose invoke raises ``exc``."""

    def __init__(self, name: str, exc: BaseException) -> None:
        self.spec = ToolSpec(name=name, description="raises", source="python")
        self.exc = exc

    async def invoke(self, ctx: Any, args: dict[str, Any], timeout: float | None) -> Any:
        raise self.exc


BUGS = [
    TypeError("unsupported operand"),
    AssertionError(),
    KeyError("k"),
    ValueError("bad value"),
    UnicodeEncodeError("ascii", "é", 0, 1, "ordinal not in range"),
    RecursionError("maximum recursion depth exceeded"),
    ZeroDivisionError("division by zero"),
    OSError(5, "I/O error"),
]


@pytest.mark.parametrize("bug", BUGS, ids=lambda e: type(e).__name__)
async def test_any_tool_exception_becomes_tool_failed_with_the_cause(bug: Exception) -> None:
    reg = ToolRegistry()
    reg.register(Raising("t:bug", bug))

    class Ctx:
        agent_id = "tester"

    with pytest.raises(ToolFailed) as info:
        await reg.call(Ctx(), "t:bug", {})
    assert info.value.__cause__ is bug
    assert info.value.tool == "t:bug" and type(bug).__name__ in info.value.reason


async def test_loom_errors_keep_their_type_and_other_loom_errors_are_tool_failed() -> None:
    reg = ToolRegistry()
    invalid = ToolArgumentsInvalid("t:a", "nope")
    plain = LoomError("inner")
    reg.register(Raising("t:a", invalid))
    reg.register(Raising("t:b", plain))
    with pytest.raises(ToolArgumentsInvalid) as info:
        await reg.call(None, "t:a", {})
    assert info.value is invalid
    with pytest.raises(ToolFailed) as finfo:
        await reg.call(None, "t:b", {})
    assert finfo.value.__cause__ is plain


@pytest.mark.parametrize("bug", BUGS[:3], ids=lambda e: type(e).__name__)
async def test_a_buggy_tool_never_ends_a_cognitive_run(runtime: Runtime, bug: Exception) -> None:
    llm = ScriptedModel([_call("t:bug", "{}"), "recovered"])
    async with Agent("t") as agent:
        registry = await runtime.get_tools()
        registry.register(Raising("t:bug", bug))
        result = await CognitiveAgent(agent.ctx, llm, tools=["t:bug"]).run("go")
    assert result.success and result.answer == "recovered"
    assert result.tool_calls[0].error and "ToolFailed" in result.tool_calls[0].error


# -- depth from a model ---------------------------------------------------------------------


def _call(name: str, raw: Any) -> ToolCall:
    return ToolCall.from_raw("call_deep", name, raw)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(nested_json(3000), id="json-3000"),
        pytest.param("[" * 3000 + "]" * 3000, id="array-3000"),
        pytest.param("{}" + nested_json(5000), id="placeholder-then-deep"),
        pytest.param(nested_json(MAX_DEPTH + 1), id="just-over"),
        pytest.param(nested(3000), id="object-not-string"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_deep_model_arguments_are_a_tool_error_shown_to_the_model(
    runtime: Runtime, raw: Any, stream: bool
) -> None:
    llm = ScriptedModel([_call("t:echo", raw), "done"])
    async with Agent("t") as agent:
        cog = CognitiveAgent(agent.ctx, llm, tools=[echo_tool()])
        if stream:
            events = [e async for e in cog.run_stream("go")]
            result = events[-1].result if isinstance(events[-1], RunFinished) else None
            assert result is not None
            shown = [e for e in events if isinstance(e, ToolResult)]
            assert shown and shown[0].error and "levels" in shown[0].error
        else:
            result = await cog.run("go")
    assert result.success and result.answer == "done"
    step = result.tool_calls[0]
    assert step.error is not None and f"deeper than {MAX_DEPTH} levels" in step.error
    assert "ToolArgumentsInvalid" in step.error
    tool_msg = next(m for m in llm.calls[1].messages if m["role"] == "tool")
    assert "levels" in tool_msg["content"]


async def test_arguments_at_the_limit_still_parse_and_brackets_in_strings_do_not_count(
    runtime: Runtime,
) -> None:
    at_limit = json.dumps({"value": nested(MAX_DEPTH - 1)})
    in_string = json.dumps({"value": "[{" * 5000})
    llm = ScriptedModel([_call("t:echo", at_limit), _call("t:echo", in_string), "done"])
    async with Agent("t") as agent:
        result = await CognitiveAgent(agent.ctx, llm, tools=[echo_tool()]).run("go")
    assert [s.error for s in result.tool_calls] == [None, None]
    assert result.tool_calls[1].result == "[{" * 5000


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 3000, 100_000])
async def test_deep_react_action_input_is_shown_to_the_model(runtime: Runtime, depth: int) -> None:
    reply = f"Thought: go\nAction: t:echo\nAction Input: {nested_json(depth)}"
    llm = ScriptedModel([reply, "Final Answer: ok"])
    async with Agent("t") as agent:
        cog = CognitiveAgent(
            agent.ctx, llm, CognitiveConfig(tool_mode="react"), tools=[echo_tool()]
        )
        result = await cog.run("go")
    assert result.success and result.answer == "ok"
    assert "levels" in llm.calls[1].messages[-1]["content"]


class Returning:
    """A tool (the registry's protocol) that returns ``value`` as it is."""

    def __init__(self, name: str, value: Any) -> None:
        self.spec = ToolSpec(name=name, description="returns", source="python")
        self.value = value

    async def invoke(self, ctx: Any, args: dict[str, Any], timeout: float | None) -> Any:
        return self.value


@pytest.mark.parametrize("stream", [False, True])
async def test_a_deep_tool_result_does_not_end_the_run(runtime: Runtime, stream: bool) -> None:
    llm = ScriptedModel([_call("t:deep", "{}"), "done"])
    async with Agent("t") as agent:
        (await runtime.get_tools()).register(Returning("t:deep", nested(5000, "list")))
        cog = CognitiveAgent(agent.ctx, llm, tools=["t:deep"])
        if stream:
            events = [e async for e in cog.run_stream("go")]
            assert isinstance(events[-1], RunFinished)
            result = events[-1].result
        else:
            result = await cog.run("go")
    assert result.success and result.answer == "done"
    shown = next(m for m in llm.calls[1].messages if m["role"] == "tool")["content"]
    assert "levels" in shown


async def test_response_objects_with_deep_arguments(runtime: Runtime) -> None:
    """An LLMResponse built by a provider from a server's tool call: same rule."""
    call = _call("t:echo", nested_json(3000))
    assert call.arguments == {} and call.arguments_error and "levels" in call.arguments_error
    llm = ScriptedModel([LLMResponse(tool_calls=[call], finish_reason="tool_calls"), "ok"])
    async with Agent("t") as agent:
        result = await CognitiveAgent(agent.ctx, llm, tools=[echo_tool()]).run("go")
    assert result.success


@pytest.mark.parametrize("schema", [{"type": "object"}, dict])
async def test_deep_structured_output_is_a_typed_error(schema: Any) -> None:
    """``call_json`` parses the model's answer: a 3000-deep answer is retried and then a
    StructuredOutputError, not a RecursionError."""
    from loom.llm.errors import StructuredOutputError

    deep = nested_json(3000)
    llm = ScriptedModel([deep, deep, '{"ok": 1}'])
    assert await llm.call_json([{"role": "user", "content": "x"}], schema) == {"ok": 1}
    llm = ScriptedModel([deep], repeat_last=True)
    with pytest.raises(StructuredOutputError, match="levels"):
        await llm.call_json([{"role": "user", "content": "x"}], schema, max_attempts=2)


async def test_a_refused_call_is_still_traced(project_agent: Agent, span_exporter: Any) -> None:
    """The argument checks run inside ``execute_tool``: a refused call shows up in the
    trace as an invalid-arguments span, not as nothing."""
    for payload, timeout in (({"value": nested(5000)}, None), ([1], None), ({}, math.nan)):
        with pytest.raises(ToolArgumentsInvalid):
            await project_agent.ctx.tool("t:echo", payload, timeout=timeout)
    spans = [s for s in span_exporter.get_finished_spans() if s.name == "execute_tool t:echo"]
    assert len(spans) == 3
    assert all(s.attributes["loom.tool.outcome"] == "invalid_arguments" for s in spans)

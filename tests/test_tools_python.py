"""Python tools: @tool schemas, validation, ctx.tool, errors, approval, registry rules."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from loom import (
    Agent,
    LoomError,
    Runtime,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolFailed,
    ToolNotFound,
    ToolTimeout,
)
from loom.tools import ApprovalRequest, PythonTool, ToolRegistry, tool


def test_schema_from_hints_and_docstring() -> None:
    def search(query: str, top_k: int = 5, mode: Literal["fast", "deep"] = "fast") -> list[str]:
        """Searches the notes.

        Args:
            query: What to look for.
            top_k: How many results
                to return.
        """
        return []

    t = PythonTool(search, name="notes:search")
    s = t.spec
    assert s.name == "notes:search" and s.description == "Searches the notes."
    props = s.parameters["properties"]
    assert props["query"] == {"type": "string", "description": "What to look for."}
    assert (
        props["top_k"]["default"] == 5
        and props["top_k"]["description"] == "How many results to return."
    )
    assert props["mode"]["enum"] == ["fast", "deep"]
    assert s.parameters["required"] == ["query"]
    assert s.parameters["additionalProperties"] is False
    oa = s.to_openai()
    assert oa["type"] == "function" and oa["function"]["name"] == "notes__search"


def test_ctx_parameter_is_not_in_the_schema() -> None:
    def whoami(ctx, greeting: str) -> str:  # type: ignore[no-untyped-def]
        return f"{greeting} {ctx.agent_id}"

    t = PythonTool(whoami)
    assert list(t.spec.parameters["properties"]) == ["greeting"]
    assert t.name == "local:whoami"


def test_bad_names_and_varargs_are_refused() -> None:
    with pytest.raises(LoomError, match="namespace:verb"):
        PythonTool(lambda: 1, name="nocolon")
    with pytest.raises(LoomError, match="kwargs"):
        PythonTool(lambda **kw: 1, name="a:b")


async def test_name_first_and_dotted_as_earlier_loom_code_wrote_it(runtime: Runtime) -> None:
    @tool("hello.echo", description="Echoes the text back.", register=False)
    def echo(text: str) -> str:
        return text

    assert echo.name == "hello.echo" and echo.spec.description == "Echoes the text back."
    async with Agent("a", tools=[echo]) as a:
        assert await a.ctx.tool("hello.echo", {"text": "hi"}) == "hi"
        [spec] = [s for s in await a.ctx.tools() if s.name == "hello.echo"]
        wire = spec.to_openai()["function"]["name"]
        assert wire == "hello_echo"
        # A model calls the tool by its wire name; it maps back.
        assert await a.ctx.tool(wire, {"text": "back"}) == "back"
    with pytest.raises(TypeError, match="twice"):
        tool("a:b", name="c:d")
    for bad in ("nodots", ".echo", "hello.", "a..b", "sp ace.x"):
        with pytest.raises(LoomError, match="namespace:verb"):
            PythonTool(lambda: 1, name=bad)


class Point(BaseModel):
    x: int
    y: int


async def test_call_validate_and_result_types(runtime: Runtime) -> None:
    @tool(name="geo:shift", register=False)
    async def shift(p: Point, dx: int = 1) -> Point:
        """Shifts a point."""
        return Point(x=p.x + dx, y=p.y)

    async with Agent("a", tools=[shift]) as a:
        assert await a.ctx.tool("geo:shift", {"p": {"x": 1, "y": 2}, "dx": 3}) == {"x": 4, "y": 2}
        with pytest.raises(ToolArgumentsInvalid) as info:
            await a.ctx.tool("geo:shift", {"p": {"x": "nope"}, "extra": 1})
        err = info.value
        assert err.tool == "geo:shift"
        locs = {e["loc"] for e in err.errors}
        assert {"p.x", "p.y", "extra"} <= locs
        with pytest.raises(ToolNotFound, match="did you mean geo:shift"):
            await a.ctx.tool("geo:shfit", {})
        names = [s.name for s in await a.ctx.tools()]
        assert "geo:shift" in names


async def test_sync_tools_run_off_the_loop(runtime: Runtime) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def blocking(seconds: float) -> str:
        seen.append(threading.get_ident())
        time.sleep(seconds)
        return "done"

    t = PythonTool(blocking, name="slow:sleep")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    tick = asyncio.create_task(ticker())
    async with Agent("a", tools=[t]) as a:
        results = await asyncio.gather(
            *(a.ctx.tool("slow:sleep", {"seconds": 0.2}) for _ in range(4))
        )
    tick.cancel()
    assert results == ["done"] * 4
    assert loop_thread not in seen
    assert ticks >= 15, "the loop kept ticking while sync tools ran"


async def test_failures_and_timeouts_are_typed(runtime: Runtime) -> None:
    def broken() -> None:
        raise KeyError("missing")

    async def forever() -> None:
        await asyncio.sleep(60)

    async with Agent(
        "a", tools=[PythonTool(broken, name="t:broken"), PythonTool(forever, name="t:forever")]
    ) as a:
        with pytest.raises(ToolFailed, match="KeyError") as info:
            await a.ctx.tool("t:broken")
        assert info.value.tool == "t:broken"
        start = time.monotonic()
        with pytest.raises(ToolTimeout) as tinfo:
            await a.ctx.tool("t:forever", timeout=0.2)
        assert isinstance(tinfo.value, TimeoutError)
        assert time.monotonic() - start < 2


def test_registering_a_name_twice_is_an_error() -> None:
    reg = ToolRegistry()
    reg.register(PythonTool(lambda: 1, name="x:y"))
    with pytest.raises(LoomError, match="already registered"):
        reg.register(PythonTool(lambda: 2, name="x:y"))


async def test_approval_denied_granted_and_missing() -> None:
    reg = ToolRegistry(require_approval=["danger:do"])
    reg.register(PythonTool(lambda target: f"did {target}", name="danger:do"))

    class Ctx:
        agent_id = "tester"

    with pytest.raises(ToolDenied, match="no approval callback") as info:
        await reg.call(Ctx(), "danger:do", {"target": "x"})
    assert info.value.rule == "approval"

    asked: list[ApprovalRequest] = []

    async def deny(req: ApprovalRequest) -> bool:
        asked.append(req)
        return False

    reg.approver = deny
    with pytest.raises(ToolDenied, match="not approved"):
        await reg.call(Ctx(), "danger:do", {"target": "x"})
    assert asked[0].arguments == {"target": "x"} and asked[0].agent_id == "tester"

    def grant(req: ApprovalRequest) -> bool:  # sync callbacks run off the loop
        time.sleep(0.05)
        return req.arguments["target"] == "ok"

    reg.approver = grant
    assert await reg.call(Ctx(), "danger:do", {"target": "ok"}) == "did ok"
    assert reg.specs()[0].requires_approval


async def test_agent_lists_unknown_tool_name(runtime: Runtime) -> None:
    with pytest.raises(ToolNotFound):
        await Agent("a", tools=["nope:missing"]).start()
    assert "a" not in runtime.agents


def test_annotated_constraints_reach_the_schema() -> None:
    def tag(
        label: Annotated[str, Field(max_length=12, pattern="^[a-z]+$")],
        n: Annotated[int, Field(ge=1)] = 1,
    ) -> str:
        """Tags things."""
        return label * n

    t = PythonTool(tag, name="t:tag")
    props = t.spec.parameters["properties"]
    assert props["label"]["maxLength"] == 12 and props["label"]["pattern"] == "^[a-z]+$"
    assert props["n"]["minimum"] == 1
    with pytest.raises(ToolArgumentsInvalid):
        t.validate({"label": "UPPER"})

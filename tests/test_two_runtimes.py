"""Two runtimes in one process share nothing: bus, agents, tools, sandbox.

(Their LLM budgets, limiters, usage totals and local servers: tests/llm/test_runtime_state.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from loom import Agent, Runtime, ToolNotFound
from loom.config import parse_project_config


def _runtime(root: Path, name: str, tools: str = "") -> Runtime:
    root.mkdir()
    text = f'[project]\nname = "{name}"\n\n[workspace]\nroot = "ws"\n{tools}'
    (root / "loom.toml").write_text(text)
    return Runtime(parse_project_config(text, root / "loom.toml"))


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Runtime]]:
    a = _runtime(tmp_path / "a", "alpha", '\n[tools]\nrequire_approval = ["fs:delete"]\n')
    b = _runtime(tmp_path / "b", "beta")
    try:
        yield a, b
    finally:
        await a.stop(timeout=5)
        await b.stop(timeout=5)


async def test_tools_registered_in_one_runtime_stay_there(pair: tuple[Runtime, Runtime]) -> None:
    a, b = pair

    def shout(text: str) -> str:
        """Upper-cases text."""
        return text.upper()

    one = Agent("one", tools=[shout], runtime=a)
    two = Agent("two", runtime=b)
    await one.start()
    await two.start()
    assert await one.ctx.tool("local:shout", {"text": "hi"}) == "HI"
    with pytest.raises(ToolNotFound):
        await two.ctx.tool("local:shout", {"text": "hi"})
    ra, rb = await a.get_tools(), await b.get_tools()
    assert ra is not rb
    assert "local:shout" in ra and "local:shout" not in rb
    # Each project's own [tools] settings, on its own registry.
    assert ra.needs_approval("fs:delete") and not rb.needs_approval("fs:delete")


async def test_native_tools_confined_to_each_runtimes_workspace(
    pair: tuple[Runtime, Runtime], tmp_path: Path
) -> None:
    a, b = pair
    one, two = Agent("one", runtime=a), Agent("two", runtime=b)
    await one.start()
    await two.start()
    await one.ctx.tool("fs:write_file", {"path": "note.md", "content": "from a"})
    await two.ctx.tool("fs:write_file", {"path": "note.md", "content": "from b"})
    assert (tmp_path / "a" / "ws" / "note.md").read_text() == "from a"
    assert (tmp_path / "b" / "ws" / "note.md").read_text() == "from b"
    assert (await one.ctx.tool("fs:read_file", {"path": "note.md"}))["content"] == "from a"
    assert a.sandbox_status is not None and b.sandbox_status is not None
    assert a.sandbox_status is not b.sandbox_status


async def test_agents_and_buses_are_separate(pair: tuple[Runtime, Runtime]) -> None:
    a, b = pair
    seen: list[str] = []

    async def record(ctx: object, topic: str, event: object) -> None:
        seen.append(topic)

    # The same agent id may run once in each runtime.
    await Agent("same", topics=["t.>"], on_event=record, runtime=a).start()
    await Agent("same", topics=["t.>"], on_event=record, runtime=b).start()
    sender = Agent("sender", runtime=a)
    await sender.start()
    await sender.ctx.emit("t.one")
    assert await _settled(lambda: seen == ["t.one"])
    assert set(a.agents) == {"same", "sender"} and set(b.agents) == {"same"}
    assert a.bus.stats().published >= 1 and b.bus.stats().published == 0


async def _settled(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    # Nothing more arrives late (e.g. a copy through the other runtime).
    await asyncio.sleep(0.05)
    return check()

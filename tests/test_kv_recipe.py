"""docs/kv.md's recipe for the original Loom's memory calls (``save_plan``,
``get_recent_plans``, ``check_duplicate_plan``) runs as written, on a real project
store, from agents."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from loom import Agent, Runtime
from loom.config import parse_project_config

DOC = Path(__file__).resolve().parent.parent / "docs" / "kv.md"


def _recipe() -> dict[str, Any]:
    text = DOC.read_text()
    section = text[text.index("## Recipe: the original Loom's memory calls") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    namespace: dict[str, Any] = {"__name__": "kv_recipe"}
    exec(compile(block.group(1), str(DOC), "exec"), namespace)
    return namespace


@pytest.fixture
async def project(tmp_path: Path) -> Any:
    text = '[project]\nname = "trader"\n'
    (tmp_path / "loom.toml").write_text(text)
    rt = Runtime(parse_project_config(text, tmp_path / "loom.toml"))
    try:
        yield rt
    finally:
        await rt.stop(timeout=5)


async def test_save_and_list_recent_plans(project: Runtime) -> None:
    recipe = _recipe()
    async with Agent("planner", runtime=project) as planner:
        ids = []
        for n in range(5):
            ids.append(await recipe["save_plan"](planner.ctx, {"symbol": "BTC", "n": n}))
        assert len(set(ids)) == 5
        recent = await recipe["get_recent_plans"](planner.ctx, limit=3)
        assert [p["n"] for p in recent] == [4, 3, 2]
        assert len(await recipe["get_recent_plans"](planner.ctx)) == 5


async def test_duplicate_plans_are_detected_once_across_agents(project: Runtime) -> None:
    recipe = _recipe()
    check = recipe["check_duplicate_plan"]
    plan = {"symbol": "ETH", "side": "buy", "entry": 3100}
    async with Agent("a", runtime=project) as a, Agent("b", runtime=project) as b:
        # Both agents check the same plan at once: exactly one sees it as new.
        first = await asyncio.gather(*(check(x.ctx, dict(plan)) for x in (a, b, a, b)))
        assert sorted(first) == [False, True, True, True]
        # Key order inside the plan does not matter; another plan is new.
        assert await check(b.ctx, dict(reversed(list(plan.items())))) is True
        assert await check(a.ctx, {**plan, "side": "sell"}) is False
        # Outside the window it is new again.
        assert await check(a.ctx, {"symbol": "SOL"}, window=0.1) is False
        await asyncio.sleep(0.2)
        assert await check(a.ctx, {"symbol": "SOL"}, window=0.1) is False


async def test_plans_are_there_after_a_restart(tmp_path: Path) -> None:
    recipe = _recipe()
    text = '[project]\nname = "trader"\n'
    (tmp_path / "loom.toml").write_text(text)
    for run in range(2):
        rt = Runtime(parse_project_config(text, tmp_path / "loom.toml"))
        try:
            async with Agent("planner", runtime=rt) as planner:
                await recipe["save_plan"](planner.ctx, {"run": run})
                assert await recipe["check_duplicate_plan"](planner.ctx, {"p": 1}) is (run == 1)
                plans = await recipe["get_recent_plans"](planner.ctx)
                assert [p["run"] for p in plans] == list(range(run, -1, -1))
        finally:
            await rt.stop(timeout=5)

"""The seed's own usage, verbatim, as a plain script in a project directory: the
"pre-configured" provider comes from loom.toml's [llm.deepseek] (pointed at the real
local model server) and the native tools from its [workspace] (issue 9 §1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.script_mode_helpers import project, run_script

SEED = """
import asyncio
from loom import Agent
from loom.llm import LLMProvider

async def main():
    agent = Agent(agent_id="researcher", topics=["tasks"])
    await agent.start()

    # Use pre-configured provider
    llm = LLMProvider.from_name(agent.ctx, "deepseek")

    # Call LLM
    response = await llm.call(messages=[
        {"role": "system", "content": "You are a research assistant."},
        {"role": "user", "content": "Summarize recent AI advances"},
    ])
    print(response.content)
    result = await agent.ctx.tool("fs:read_file", {"path": "notes.md"})
    print("NOTES:", result["content"])
    print("MODEL:", response.model)
    await agent.stop()

asyncio.run(main())
"""


async def test_the_seed_snippet_runs_against_its_project(tmp_path: Path, smollm2: Any) -> None:
    proj = project(
        tmp_path / "proj",
        f"""
        [llm.deepseek]
        base_url = "{smollm2.base_url}"
        model = "{smollm2.model}"
        api_key = "not-needed-locally"
        max_tokens = 12

        [workspace]
        root = "ws"
        """,
    )
    r = run_script(SEED, proj, env={"DEEPSEEK_API_KEY": ""})
    assert r.returncode == 0, r.stderr
    assert "NOTES: my notes" in r.stdout, r.stdout
    assert f"MODEL: {smollm2.model}" in r.stdout, r.stdout

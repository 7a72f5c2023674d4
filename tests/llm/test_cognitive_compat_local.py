"""The LLM module's "Integration with Cognitive Module" snippet, run as written against
the real local model server (SmolLM2-135M on llama.cpp), with ``[llm.deepseek]`` in
loom.toml pointed at it. The model is tiny: the test checks the run's shape (real calls
were made, the result is complete), never its wording."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from loom import Agent, Runtime
from loom.config import parse_project_config

pytestmark = pytest.mark.timeout(300)


async def test_the_seeds_cognitive_snippet_on_the_local_model(
    smollm2: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "not-needed-by-the-local-server")
    source = (
        '[workspace]\nroot = "ws"\n\n'
        f'[llm.deepseek]\nbase_url = "{smollm2.base_url}"\nmodel = "{smollm2.model}"\n'
        "max_tokens = 60\ntemperature = 0.0\ntimeout = 120\n"
    )
    (tmp_path / "loom.toml").write_text(source)
    (tmp_path / "ws").mkdir()
    rt = Runtime(parse_project_config(source, tmp_path / "loom.toml"))
    agent = Agent(agent_id="researcher", topics=["tasks"], runtime=rt)
    await agent.start()
    try:
        # -- the snippet, unchanged ----------------------------------------------------
        from loom.cognitive import CognitiveAgent, CognitiveConfig
        from loom.llm import LLMProvider

        cognitive = CognitiveAgent(
            ctx=agent.ctx,
            llm=LLMProvider.from_name(agent.ctx, "deepseek"),
            config=CognitiveConfig(
                system_prompt="You are a research assistant...",
                max_iterations=5,
            ),
        )

        started = time.perf_counter()
        result = await cognitive.run("Research AI frameworks")
        wall_ms = (time.perf_counter() - started) * 1000
        # ------------------------------------------------------------------------------
        assert cognitive.llm.config.base_url.rstrip("/") == smollm2.base_url.rstrip("/")
        assert 1 <= result.iterations <= 5
        assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
        assert 0 < result.total_latency_ms <= wall_ms
        if result.success:
            assert result.answer.strip()
        else:
            assert result.error and "iterations" in result.error, result.error
    finally:
        await rt.stop(timeout=10)  # closes the provider too (it was made with agent.ctx)

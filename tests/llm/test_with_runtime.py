"""The LLM client with Loom's real project config and runtime (loom.config, loom.Runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import respond
from loom.errors import ConfigError
from loom.llm import LLMProvider

config_mod = pytest.importorskip("loom.config")

TOML = """\
[project]
name = "demo"

[llm.fake]
base_url = "{base_url}"
model = "fake-model"
temperature = 0.1

[llm.broken]
base_url = "http://127.0.0.1:9/v1"
max_tokens = "lots"

[llm.keyed]
base_url = "http://127.0.0.1:9/v1"
api_key = "${{LOOM_TEST_UNSET_VAR}}"
"""


def _project(tmp_path: Path, base_url: str = "http://127.0.0.1:9/v1"):
    path = tmp_path / "loom.toml"
    path.write_text(TOML.format(base_url=base_url))
    return config_mod.load_project_config(path)


def test_bad_value_reports_loom_toml_line(tmp_path):
    project = _project(tmp_path)
    with pytest.raises(ConfigError) as ei:
        LLMProvider.from_config(None, "broken", project)
    assert ei.value.line == 11 and ei.value.key == "llm.broken.max_tokens"
    assert str(tmp_path / "loom.toml") in str(ei.value)


def test_unset_variable_reports_line(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOM_TEST_UNSET_VAR", raising=False)
    with pytest.raises(ConfigError, match="LOOM_TEST_UNSET_VAR") as ei:
        LLMProvider.from_config(None, "keyed", _project(tmp_path))
    assert ei.value.line == 15


async def test_agent_ctx_and_runtime_shutdown(tmp_path, fault_server):
    from loom import Agent, Runtime

    fault_server.push(respond())
    runtime = Runtime(_project(tmp_path, fault_server.base_url))
    agent = Agent(agent_id="writer", topics=["tasks"], runtime=runtime)
    llm = LLMProvider.from_name(agent.ctx, "fake")
    r = await llm.call([{"role": "user", "content": "hi"}])
    assert r.content == "hello"
    assert fault_server.requests[0].json()["temperature"] == 0.1
    assert runtime.llm_state.usage.agent("writer").calls == 1
    assert llm._client is not None
    await runtime.stop(timeout=5)
    assert llm._client is None and llm._closed  # closed by the runtime's shutdown hook

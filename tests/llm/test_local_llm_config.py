"""``LocalModelServer.llm_config()``: a running server's provider settings are the served
path's (``serve = ...``), and docs/llm.md's example of it runs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from loom.llm import LLMProvider, LocalModelServer, LocalServerError
from loom.llm.config import resolve_config

pytestmark = pytest.mark.timeout(180)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "llm.md").read_text()
LOCAL_EXAMPLES = re.findall(r"<!-- run: local model -->\n```python\n(.*?)```", DOC, re.S)


def test_not_started_is_an_error():
    with pytest.raises(LocalServerError, match="not started"):
        LocalModelServer("smollm2").llm_config()


async def test_same_settings_as_a_served_model(smollm2):
    config = smollm2.llm_config()
    assert (config.base_url, config.model, config.name) == (
        smollm2.base_url,
        smollm2.model,
        "local",
    )
    served = resolve_config("local")  # the preset: Loom starts the server itself
    assert served.serve and not config.serve
    assert (config.max_concurrency, config.timeout) == (served.max_concurrency, served.timeout)
    async with LLMProvider(None, config) as running, LLMProvider(None, served) as started:
        assert running.quirks == started.quirks
        assert running.quirks.name == "llamacpp"


async def test_overrides(smollm2):
    config = smollm2.llm_config(name="tiny", max_tokens=8, timeout_ms=2500)
    assert (config.name, config.max_tokens, config.timeout) == ("tiny", 8, 2.5)
    with pytest.raises(ValueError, match="temperature"):
        smollm2.llm_config(temperature=9)
    async with LLMProvider(None, config) as llm:
        answer = await llm.call([{"role": "user", "content": "Hi"}])
    assert 0 < answer.usage.completion_tokens <= 8


def test_docs_have_the_example():
    assert len(LOCAL_EXAMPLES) == 1
    assert "llm_config(" in LOCAL_EXAMPLES[0]


@pytest.mark.parametrize("code", LOCAL_EXAMPLES)
async def test_docs_example_runs(code, smollm2, capsys):
    # smollm2: skips where the local model cannot run; the example starts its own server.
    namespace: dict[str, object] = {}
    exec("async def __example():\n" + textwrap.indent(code, "    "), namespace)
    await namespace["__example"]()  # type: ignore[operator]
    assert capsys.readouterr().out.strip()

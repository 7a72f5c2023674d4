"""``ChatModel`` (loom.llm.types) is the one model type: the provider, the test models and
a user's own double all satisfy it, checked at run time and by mypy (which also checks
that the runtime is an ``LLMHost``)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from loom import patterns
from loom.cognitive import CognitiveAgent
from loom.llm import ChatModel, FinishEvent, LLMConfig, LLMProvider, LLMResponse, StreamEvent
from loom.testing import FunctionModel, ScriptedModel

M = TypeVar("M")
ROOT = Path(__file__).resolve().parents[2]


class Double:
    """A user's model double: no base class, just the four methods."""

    async def call(self, messages: Sequence[Any], **kwargs: Any) -> LLMResponse:
        return LLMResponse(content="double")

    async def stream_events(
        self, messages: Sequence[Any], **kwargs: Any
    ) -> AsyncIterator[StreamEvent]:
        yield FinishEvent("stop", LLMResponse(content="double"))

    async def call_json(
        self,
        messages: Sequence[Any],
        schema: type[M],
        *,
        max_attempts: int | None = None,
        **kwargs: Any,
    ) -> M:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return len(text)


class NotAModel:
    async def call(self, messages: Sequence[Any], **kwargs: Any) -> LLMResponse:
        return LLMResponse(content="")


def _models() -> list[Any]:
    return [
        LLMProvider(None, LLMConfig(base_url="http://127.0.0.1:9/v1")),
        ScriptedModel(["hi"]),
        FunctionModel(lambda call: "hi"),
        Double(),
    ]


def test_each_model_satisfies_the_protocol_at_run_time() -> None:
    for model in _models():
        assert isinstance(model, ChatModel), type(model).__name__
    assert not isinstance(NotAModel(), ChatModel)
    assert patterns.ChatModel is ChatModel


async def test_a_users_double_drives_a_cognitive_agent() -> None:
    result = await CognitiveAgent(None, Double(), tools=[]).run("hello")
    assert result.success and result.answer == "double"


SNIPPET = """\
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from loom import Runtime
from loom.cognitive import CognitiveAgent
from loom.llm import ChatModel, FinishEvent, LLMConfig, LLMHost, LLMProvider, LLMResponse
from loom.llm import StreamEvent
from loom.testing import FunctionModel, ScriptedModel

M = TypeVar("M")

{classes}

host: LLMHost = Runtime()  # the runtime is what the LLM client takes it for

provider: ChatModel = LLMProvider(None, LLMConfig(base_url="http://127.0.0.1:9/v1"))
scripted: ChatModel = ScriptedModel(["hi"])
function: ChatModel = FunctionModel(lambda call: "hi")
double: ChatModel = Double()
agent = CognitiveAgent(None, Double())
wrong: ChatModel = NotAModel()  # the one error expected
"""


def test_each_model_satisfies_the_protocol_for_mypy(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    classes = inspect.getsource(Double) + "\n\n" + inspect.getsource(NotAModel)
    code = SNIPPET.format(classes=classes)
    wrong_line = code.splitlines().index("wrong: ChatModel = NotAModel()  # the one error expected")
    snippet = tmp_path / "uses_models.py"
    snippet.write_text(code)
    # In a child process: mypy changes process-wide settings (the recursion limit).
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--follow-imports=silent",
            str(snippet),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(ROOT / "python")},
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    mine = [line for line in proc.stdout.splitlines() if line.startswith(str(snippet))]
    assert len(mine) == 1, out
    assert f":{wrong_line + 1}: error:" in mine[0] and "NotAModel" in mine[0], out

"""docs/llm.md stays true: its runnable examples run, and it documents every config key,
error and quirk profile."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from loom.llm import LLMConfig
from loom.llm import errors as llm_errors
from loom.llm.quirks import QUIRKS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "llm.md").read_text()
RUNNABLE = re.findall(r"<!-- run -->\n```python\n(.*?)```", DOC, re.S)


def test_there_are_runnable_examples():
    assert len(RUNNABLE) >= 2


@pytest.mark.parametrize("code", RUNNABLE, ids=[f"example{i}" for i in range(len(RUNNABLE))])
async def test_example_runs(code):
    namespace: dict = {}
    exec("async def __example():\n" + textwrap.indent(code, "    "), namespace)
    await namespace["__example"]()


def test_every_config_key_documented():
    for name in LLMConfig.model_fields:
        if name == "name":
            continue
        assert f"`{name}`" in DOC, name
    for alias in ("api_base", "timeout_ms", "timeout_sec"):
        assert f"`{alias}`" in DOC


def test_every_error_documented():
    for name in llm_errors.__all__:
        assert f"`{name}" in DOC, name


def test_every_quirk_profile_documented():
    for name in QUIRKS:
        assert f"`{name}`" in DOC, name

"""docs/patterns.md's code blocks run, in order, in one namespace (top-level await)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

from loom import Runtime

DOC = Path(__file__).resolve().parent.parent / "docs" / "patterns.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_an_example_per_pattern_and_bus_version() -> None:
    text = "\n".join(python_blocks())
    for name in (
        "Chain(",
        "Router(",
        "Guardrails(",
        "Orchestrator(",
        "BusStep(",
        "BusRouter(",
        "BusGuardrails(",
        "BusOrchestrator(",
    ):
        assert name in text, f"no example uses {name}"


async def test_doc_examples_run(runtime: Runtime) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_patterns"}
    blocks = python_blocks()
    assert len(blocks) >= 9
    for i, block in enumerate(blocks):
        code = compile(
            block, f"{DOC.name}[block {i}]", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        result = eval(code, namespace)
        if inspect.isawaitable(result):
            await result

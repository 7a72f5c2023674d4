"""The ReAct text protocol, for models without native tool calling.

The model writes either::

    Thought: I should read the notes.
    Action: fs:read_file
    Action Input: {"path": "notes.md"}

or ``Final Answer: ...``. Parsing anchors on the ``Action Input:`` label and decodes
exactly one JSON value there (``json.JSONDecoder.raw_decode``), so braces elsewhere in
the prose cannot be mistaken for the arguments. Input nested deeper than
:data:`loom._depth.MAX_DEPTH` levels is refused before it is decoded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from loom._depth import text_too_deep

_FINAL = re.compile(r"^\s*\**final\s+answer\**\s*:\s*", re.I | re.M)
_ACTION = re.compile(r"^\s*\**action\**\s*:\s*`?([A-Za-z0-9_.:-]+)`?\s*$", re.I | re.M)
_INPUT = re.compile(r"^\s*\**action\s+input\**\s*:\s*", re.I | re.M)
_FENCE = re.compile(r"^```(?:json)?\s*", re.I)


@dataclass(frozen=True)
class ReactStep:
    """What the model asked for: a tool call, a final answer, or neither."""

    kind: str  # "action" | "final" | "invalid"
    tool: str = ""
    arguments: dict[str, Any] | None = None
    answer: str = ""
    error: str = ""


def instructions(tools: list[dict[str, Any]]) -> str:
    """The system-prompt section that teaches the protocol and lists the tools."""
    lines = [
        "You can use tools. To call one, reply with exactly:",
        "Thought: <why>",
        "Action: <tool name>",
        'Action Input: <JSON object with the arguments, e.g. {"path": "a.txt"}>',
        "Then wait for the Observation. When you know the answer, reply:",
        "Final Answer: <your answer>",
        "",
        "Tools:",
    ]
    for t in tools:
        fn = t.get("function", t)
        params = json.dumps(fn.get("parameters", {}).get("properties", {}))
        lines.append(f"- {fn.get('name')}: {fn.get('description', '')} Arguments: {params}")
    return "\n".join(lines)


#: What a ``cot`` run adds to the system prompt.
CHAIN_OF_THOUGHT = (
    "Think through the problem step by step and show your reasoning. Then give the "
    "result on a last line that starts with 'Final Answer:'."
)


def split_final(text: str) -> tuple[str, str] | None:
    """``(reasoning, answer)`` around the last ``Final Answer:`` label, or None."""
    last = None
    for m in _FINAL.finditer(text):
        last = m
    if last is None:
        return None
    return text[: last.start()].strip(), text[last.end() :].strip()


def parse(text: str) -> ReactStep:
    """Parses one model reply."""
    final = _FINAL.search(text)
    action = None
    for m in _ACTION.finditer(text):
        action = m  # the last Action line wins (models sometimes restate earlier ones)
    if action is None:
        if final is not None:
            return ReactStep("final", answer=text[final.end() :].strip())
        return ReactStep("invalid", error="no 'Action:' or 'Final Answer:' line found")
    if final is not None and final.start() > action.start():
        return ReactStep("final", answer=text[final.end() :].strip())
    inp = _INPUT.search(text, action.end())
    if inp is None:
        return ReactStep("invalid", tool=action.group(1), error="'Action Input:' is missing")
    rest = _FENCE.sub("", text[inp.end() :].lstrip())
    problem = text_too_deep(rest)
    if problem:
        return ReactStep("invalid", tool=action.group(1), error=f"Action Input is {problem}")
    try:
        value, _ = json.JSONDecoder().raw_decode(rest)
    except json.JSONDecodeError as exc:
        return ReactStep(
            "invalid", tool=action.group(1), error=f"Action Input is not valid JSON: {exc.msg}"
        )
    if not isinstance(value, dict):
        return ReactStep(
            "invalid", tool=action.group(1), error="Action Input must be a JSON object"
        )
    return ReactStep("action", tool=action.group(1), arguments=value)

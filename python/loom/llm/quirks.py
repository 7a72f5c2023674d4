"""Provider quirks, in one table.

OpenAI-compatible servers differ in small ways that break real conversations. Each
difference we know of is a field of :class:`Quirks`, each server a row of :data:`QUIRKS`,
and :func:`serialize_messages` is the one place that turns messages into what a server
accepts. Every row has a test in ``tests/llm/test_quirks.py``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .types import Message


@dataclass(frozen=True, slots=True)
class Quirks:
    """What one kind of server needs."""

    name: str
    stream_usage: bool = True
    """Accepts ``stream_options: {include_usage: true}`` (and then sends usage last)."""
    json_schema: bool = True
    """Supports ``response_format: {type: json_schema, ...}``."""
    reasoning_on_tool_turns: bool = False
    """Wants ``reasoning_content`` sent back on assistant turns carrying tool calls
    (DeepSeek thinking mode); elsewhere it is stripped (strict servers reject it)."""
    null_content_with_tool_calls: bool = True
    """Accepts ``content: null`` on an assistant message with tool calls. llama.cpp's
    server answers 500 to that; we send ``""`` instead."""
    headers: dict[str, str] = field(default_factory=dict)
    """Headers added to every request (OpenRouter's app attribution)."""
    json_object_schema: bool = False
    """Accepts ``response_format: {type: json_object, schema: ...}`` (llama-cpp-python
    turns it into a grammar, so the output is schema-valid by construction)."""
    max_schema_bound: int | None = None
    """The largest length/count bound a tool schema may carry. llama-cpp-python
    compiles tool schemas into a grammar that repeats a rule ``maxLength`` times;
    ``maxLength: 4096`` makes its grammar parser fail and the server process exit.
    Larger bounds are dropped from the schema sent (the tool still enforces them);
    small ones stay, and keep a tiny model from rambling inside a string."""


#: The profile of llama-cpp-python's server, which ``serve = ...`` implies.
LLAMA_CPP = "llamacpp"

QUIRKS: dict[str, Quirks] = {
    "openai": Quirks("openai"),
    "deepseek": Quirks(
        "deepseek",
        # DeepSeek's API has json_object but no json_schema response format.
        json_schema=False,
        reasoning_on_tool_turns=True,
    ),
    "openrouter": Quirks(
        "openrouter",
        headers={"HTTP-Referer": "https://github.com/loom-agents/loom", "X-Title": "Loom"},
    ),
    "ollama": Quirks("ollama", stream_usage=True, json_schema=True),
    "llamacpp": Quirks(
        "llamacpp",
        stream_usage=False,
        json_schema=False,
        null_content_with_tool_calls=False,
        json_object_schema=True,
        max_schema_bound=64,
    ),
    # Unknown OpenAI-compatible servers: only what every server accepts.
    "generic": Quirks(
        "generic", stream_usage=False, json_schema=False, null_content_with_tool_calls=False
    ),
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def detect(base_url: str, *, override: str | None = None, serve: str | None = None) -> Quirks:
    """Pick the quirk profile for a server: the ``quirks`` key, else from the URL."""
    if override:
        return QUIRKS.get(override, QUIRKS["generic"])
    if serve:
        return QUIRKS[LLAMA_CPP]
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if host.endswith("deepseek.com"):
        return QUIRKS["deepseek"]
    if host.endswith("openrouter.ai"):
        return QUIRKS["openrouter"]
    if host.endswith("openai.com") or host.endswith("openai.azure.com"):
        return QUIRKS["openai"]
    if parts.port == 11434:
        return QUIRKS["ollama"]
    return QUIRKS["generic"]


def serialize_message(msg: Message | dict[str, Any], quirks: Quirks) -> dict[str, Any]:
    """One message in the shape ``quirks`` accepts."""
    if isinstance(msg, Message):
        out: dict[str, Any] = {"role": msg.role, "content": msg.content}
        if msg.name is not None:
            out["name"] = msg.name
        if msg.tool_calls:
            out["tool_calls"] = [tc.to_wire() for tc in msg.tool_calls]
        if msg.tool_call_id is not None:
            out["tool_call_id"] = msg.tool_call_id
        if msg.reasoning_content is not None:
            out["reasoning_content"] = msg.reasoning_content
        if msg.model_extra:
            out.update(msg.model_extra)
    else:
        out = dict(msg)
        tcs = out.get("tool_calls")
        if tcs:
            wired = []
            for tc in tcs:
                if hasattr(tc, "to_wire"):
                    wired.append(tc.to_wire())
                    continue
                tc = dict(tc)
                fn = tc.get("function")
                if isinstance(fn, dict) and not isinstance(fn.get("arguments", ""), str):
                    # Strict servers want the arguments as a JSON string.
                    import json

                    tc["function"] = {**fn, "arguments": json.dumps(fn["arguments"])}
                tc.setdefault("type", "function")
                wired.append(tc)
            out["tool_calls"] = wired
    role = out.get("role")
    if role == "assistant":
        has_tools = bool(out.get("tool_calls"))
        if not has_tools and not out.get("tool_calls", True):
            out.pop("tool_calls", None)
        if out.get("content") is None and not quirks.null_content_with_tool_calls:
            out["content"] = ""
        if "reasoning_content" in out and not (quirks.reasoning_on_tool_turns and has_tools):
            del out["reasoning_content"]
    elif role == "tool" and out.get("content") is None:
        out["content"] = ""
    return out


def serialize_messages(
    messages: Iterable[Message | dict[str, Any]], quirks: Quirks
) -> list[dict[str, Any]]:
    """All messages in the shape ``quirks`` accepts."""
    return [serialize_message(m, quirks) for m in messages]


def tool_spec(tool: Any) -> dict[str, Any]:
    """Normalise a tool description to ``{"type": "function", "function": {...}}``.

    Accepts the OpenAI shape, the seed's flat ``{"name", "description", "parameters"}``,
    or any object with ``openai_schema()`` / ``to_openai()`` (Loom's ``@tool``).
    """
    for attr in ("openai_schema", "to_openai"):
        fn = getattr(tool, attr, None)
        if callable(fn):
            tool = fn()
            break
    if not isinstance(tool, dict):
        raise TypeError(f"cannot use {type(tool).__name__} as a tool description")
    if tool.get("type") == "function" and "function" in tool:
        return tool
    fn_spec = {
        k: v for k, v in tool.items() if k in ("name", "description", "parameters", "strict")
    }
    fn_spec.setdefault("parameters", {"type": "object", "properties": {}})
    return {"type": "function", "function": fn_spec}


_BOUNDS = frozenset(
    {"maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties"}
)


def strip_bounds(schema: Any, limit: int) -> Any:
    """``schema`` without length/count bounds above ``limit``, recursively (see
    :attr:`Quirks.max_schema_bound`)."""
    if isinstance(schema, dict):
        return {
            k: strip_bounds(v, limit)
            for k, v in schema.items()
            if not (k in _BOUNDS and isinstance(v, int) and v > limit)
        }
    if isinstance(schema, list):
        return [strip_bounds(v, limit) for v in schema]
    return schema


def tool_choice_spec(choice: Any) -> Any:
    """``"auto"``/``"none"``/``"required"`` pass through; a bare name forces that tool."""
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


__all__ = [
    "LLAMA_CPP",
    "QUIRKS",
    "Quirks",
    "detect",
    "is_loopback",
    "serialize_message",
    "serialize_messages",
    "strip_bounds",
    "tool_choice_spec",
    "tool_spec",
]

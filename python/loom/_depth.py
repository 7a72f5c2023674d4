"""How deeply a JSON value may nest where it crosses a trust boundary.

Two places take nested values Loom does not control the shape of: tool arguments parsed
from a model's reply, and values code hands to ``ctx.tool`` (which the Rust core then
converts recursively). Both are refused past :data:`MAX_DEPTH` levels, so a hostile or
broken value gets a typed error instead of a ``RecursionError`` out of the agent loop or
a stack overflow in native code.

Both checks are iterative, so the check itself cannot hit a recursion limit, and JSON
text is scanned *before* ``json.loads`` (whose C decoder recurses and raises
``RecursionError`` near 1000 levels, or overflows the C stack if the application has
raised Python's recursion limit). The rule lives here, once; callers turn a violation
into the error their layer raises (``ToolArgumentsInvalid`` for tools).
"""

from __future__ import annotations

import re
from typing import Any

from loom import _core

#: Deepest nesting accepted in tool arguments (the arguments object itself is level 1).
#: It is the core's own limit for values it converts (``loom._core.MAX_JSON_DEPTH``), so
#: there is one number for both sides and Python refuses first, with the same message.
MAX_DEPTH: int = _core.MAX_JSON_DEPTH

# A JSON string (escapes included) or one bracket: only these matter for nesting, and
# regex-skipping the strings keeps the scan fast on large arguments.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.S)


def _exceeds_text(text: str, limit: int) -> bool:
    if text.count("[") + text.count("{") <= limit:
        return False  # fewer opening brackets than the limit: cannot be deeper
    depth = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth = max(0, depth - 1)
    return False


def _exceeds_value(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True  # also ends the walk of a value that contains itself
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list, tuple)))
    return False


def _message(limit: int) -> str:
    return f"nested deeper than {limit} levels"


def text_too_deep(text: str, limit: int = MAX_DEPTH) -> str | None:
    """Why JSON ``text`` nests too deeply to parse, or None.

    Brackets inside strings do not count; malformed text is measured all the same (the
    parser then reports what is wrong with it).
    """
    return _message(limit) if _exceeds_text(text, limit) else None


def value_too_deep(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """Why ``value`` (its dicts, lists and tuples; ``{}`` is one level) nests too
    deeply, or None."""
    if not isinstance(value, (dict, list, tuple)):
        return None
    return _message(limit) if _exceeds_value(value, limit) else None


__all__ = ["MAX_DEPTH", "text_too_deep", "value_too_deep"]

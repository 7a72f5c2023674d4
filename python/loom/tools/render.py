"""A tool call as a human should see it before approving it.

An approval is only as good as what the person approving sees. The arguments come from
a model, in the model's key order, and can be built to mislead: a 200-character ``cwd``
in front of ``argv`` pushed ``rm -rf`` past a one-line preview that was cut silently.
:func:`describe_call` therefore shows

* the keys that say what will happen first (``argv``, ``command``, ``path``, ``url``,
  ...), the rest after them in sorted order — never in the model's order;
* ``argv`` element by element, all of them up to :data:`MAX_ITEMS`;
* every value on its own line, escaped (no control characters or bidi overrides reach
  the terminal), and any value longer than the limit as its head followed by
  ``… (N chars)``; more keys or elements than are shown are counted, not dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from loom._text import DEFAULT_LIMIT, escape_line, shorten

#: Argument names shown first, in this order: what runs, on what, where.
PRIORITY = ("argv", "command", "cmd", "path", "paths", "url", "method", "src", "dst", "cwd")

#: Elements of a list argument (``argv``) and keys of the arguments shown at most.
MAX_ITEMS = 200


def _string(value: str, limit: int) -> str:
    quoted = json.dumps(value[:limit], ensure_ascii=False)
    if len(value) <= limit:
        return escape_line(quoted)
    return f"{escape_line(quoted)}… ({len(value)} chars)"


def _value(value: Any, limit: int) -> str:
    if isinstance(value, str):
        return _string(value, limit)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        shown = [_string(v, limit) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            shown.append(f"… (+{len(value) - MAX_ITEMS} more, {len(value)} in all)")
        return " ".join(shown) if shown else "[]"
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return shorten(text, limit)


def _order(keys: list[str]) -> list[str]:
    first = [k for k in PRIORITY if k in keys]
    return first + sorted(k for k in keys if k not in PRIORITY)


def describe_call(tool: str, arguments: Mapping[str, Any], *, limit: int = DEFAULT_LIMIT) -> str:
    """``tool`` and its ``arguments`` as lines for a person to read (see the module
    docstring); the first line is the tool's name."""
    lines = [shorten(tool, limit)]
    keys = _order([str(k) for k in arguments])
    if not keys:
        lines.append("  (no arguments)")
    by_name = {str(k): v for k, v in arguments.items()}
    for key in keys[:MAX_ITEMS]:
        lines.append(f"  {shorten(key, 60)}: {_value(by_name[key], limit)}")
    if len(keys) > MAX_ITEMS:
        lines.append(f"  … (+{len(keys) - MAX_ITEMS} more arguments, {len(keys)} in all)")
    return "\n".join(lines)


__all__ = ["MAX_ITEMS", "PRIORITY", "describe_call"]

"""Showing untrusted text to a human: one rule for terminals and log lines.

Strings a model (or a tool, an MCP server, a web page) chose — paths, tool names,
arguments, results, error messages — end up in log lines, ``loom chat`` and ``loom
trace show``. Written raw, a newline forges a log line, a carriage return overwrites
what is on screen, ``ESC``/CSI/OSC sequences drive the terminal (colours, cursor,
window title, hyperlinks, clipboard on some terminals) and bidi overrides make text read
differently from what it is.

So every such string is passed through :func:`escape_line` (one line expected) or
:func:`escape_block` (line breaks and tabs are kept) at the moment it is displayed or
logged — never earlier, so data sent to the model or written as JSON is unchanged.
Escaped are: C0 controls, DEL, C1 controls (U+0080-U+009F), lone surrogates (which
cannot even be encoded for a UTF-8 terminal), the Unicode line/paragraph separators, and
the bidirectional formatting characters (U+061C, U+200E/F, U+202A-U+202E,
U+2066-U+2069). Each becomes a visible Python-style escape (``\\n``, ``\\x1b``,
``\\u202e``). Backslashes are left alone: a literal ``\\n`` in the text is harmless.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_LINE_BREAKS = "\u2028\u2029"
_SURROGATES = "\ud800-\udfff"
_UNSAFE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_LINE_BREAKS}{_BIDI}{_SURROGATES}]")
_UNSAFE_BLOCK = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_LINE_BREAKS}{_BIDI}{_SURROGATES}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

#: Characters of one value shown before it is shortened.
DEFAULT_LIMIT = 200


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_line(text: str) -> str:
    """``text`` safe to show as (part of) one line: every control, separator and bidi
    character escaped, newlines and tabs included."""
    if not _UNSAFE_LINE.search(text):
        return text
    return _UNSAFE_LINE.sub(_escape, text)


def escape_block(text: str) -> str:
    """Like :func:`escape_line`, but ``\\n`` and ``\\t`` are kept (multi-line output
    such as a tool's result or a traceback). ``\\r`` is escaped: it would let text
    overwrite the line it is on."""
    if not _UNSAFE_BLOCK.search(text):
        return text
    return _UNSAFE_BLOCK.sub(_escape, text)


def shorten(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` escaped for one line; past ``limit`` characters its head followed by
    ``… (N chars)`` with the full length, so a cut is never silent."""
    if len(text) <= limit:
        return escape_line(text)
    return f"{escape_line(text[:limit])}… ({len(text)} chars)"


class SafeFormatter(logging.Formatter):
    """A log formatter whose every record is one line of safe text.

    The formatted message (``msg % args``, so arguments from anywhere are covered) is
    passed through :func:`escape_line`. Tracebacks and stack info keep their lines
    (:func:`escape_block`), each indented, so that only a record's first line starts at
    the margin: an exception message holding a newline cannot pass for a record of its
    own. The ``loom`` command installs it on its stderr handler.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_line(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _indent(escape_block(super().formatException(ei)))

    def formatStack(self, stack_info: str) -> str:
        return _indent(escape_block(super().formatStack(stack_info)))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.split("\n"))


__all__ = ["DEFAULT_LIMIT", "SafeFormatter", "escape_block", "escape_line", "shorten"]

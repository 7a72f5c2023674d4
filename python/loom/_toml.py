"""Where things are in TOML text: the line of a dotted key, and TOML syntax errors as
:class:`~loom.errors.ConfigError` with the file and line."""

from __future__ import annotations

import re
import sys

from loom.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["line_of", "toml_error", "tomllib", "top_level_line"]


def line_of(source: str, keys: tuple[str, ...]) -> int | None:
    """Best-effort location of a dotted key in TOML source.

    Finds the deepest ``[table]`` header that is a prefix of ``keys`` and then the
    ``key =`` line inside it; falls back to the header line.
    """
    if not source or not keys:
        return None
    lines = source.splitlines()
    header_re = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    best: tuple[int, int] | None = None  # (depth, line index)
    for i, line in enumerate(lines):
        m = header_re.match(line)
        if not m:
            continue
        parts = tuple(p.strip().strip('"').strip("'") for p in m.group(1).split("."))
        if keys[: len(parts)] == parts and (best is None or len(parts) > best[0]):
            best = (len(parts), i)
    depth, start = best if best else (0, -1)
    rest = keys[depth:]
    if not rest:
        return start + 1 if start >= 0 else None
    key_re = re.compile(r"^\s*[\"']?" + re.escape(rest[0]) + r"[\"']?\s*(=|\.)")
    for i in range(start + 1, len(lines)):
        if header_re.match(lines[i]):
            break
        if key_re.match(lines[i]):
            return i + 1
    return start + 1 if start >= 0 else None


def toml_error(path: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    msg = str(exc)
    m = re.search(r"line (\d+)", msg)
    line = int(m.group(1)) if m else None
    detail = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
    col = re.search(r"column (\d+)", msg)
    suffix = f" (column {col.group(1)})" if col else ""
    return ConfigError(f"invalid TOML: {detail}{suffix}", path=path, line=line)


def top_level_line(source: str, key: str) -> int | None:
    """The line of ``key =`` before the first table header."""
    key_re = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=")
    for i, line in enumerate(source.splitlines()):
        if line.lstrip().startswith("["):
            return None
        if key_re.match(line):
            return i + 1
    return None

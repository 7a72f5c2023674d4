"""``${VAR}`` in loom.toml: the one expansion rule and the environment it reads.

``${VAR}`` becomes the variable's value; ``${VAR:-default}`` becomes ``default`` when
the variable is unset (or empty, for callers that count an empty value as unset). The
environment is the process's over the project's ``.env`` (:func:`environment`; a
variable already set always wins).

A reference to an unset variable is reported by the caller's ``on_missing``, which
raises a :class:`~loom.errors.MissingEnvironmentVariable` naming the variable and the
file, line and key that need it — at start-up, before anything is sent or connected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

#: ``${NAME}`` or ``${NAME:-default}``.
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def read_dotenv(path: Path) -> dict[str, str]:
    """Parses a ``.env`` file (``KEY=value``, optional ``export``, quotes, ``#``
    comments); a missing file is empty."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return out
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, _, value = line.partition("=")
        key = key.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if key:
            out[key] = value
    return out


def environment(root: Path | None) -> dict[str, str]:
    """The process environment over ``<root>/.env`` (the environment always wins)."""
    env: dict[str, str] = {}
    if root is not None:
        env.update(read_dotenv(root / ".env"))
    env.update(os.environ)
    return env


def expand(
    value: str,
    environ: Mapping[str, str],
    on_missing: Callable[[str], NoReturn],
    *,
    empty_is_unset: bool = True,
) -> str:
    """``value`` with every ``${VAR}`` / ``${VAR:-default}`` replaced from ``environ``.

    Args:
        value: The text from loom.toml.
        environ: Where variables are looked up (see :func:`environment`).
        on_missing: Called with the variable's name when one without a default is
            unset; it raises.
        empty_is_unset: Whether a variable set to ``""`` counts as unset (a key or
            a password can't be empty; a child's environment variable can).
    """

    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        found = environ.get(var)
        if found is not None and not (empty_is_unset and found == ""):
            return found
        if default is not None:
            return default
        on_missing(var)

    return VAR_RE.sub(sub, value)


__all__ = ["VAR_RE", "environment", "expand", "read_dotenv"]

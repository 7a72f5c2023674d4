"""Building a runtime's tool registry from loom.toml."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from loom.errors import ConfigError
from loom.tools.python import GLOBAL_TOOLS
from loom.tools.registry import DEFAULT_TIMEOUT, ToolRegistry

if TYPE_CHECKING:
    from loom._host import ProjectHost
    from loom.config import ProjectConfig

log = logging.getLogger("loom.tools")


async def build_registry(host: ProjectHost) -> ToolRegistry:
    """The registry for ``runtime``: native tools configured from ``[workspace]``,
    ``[tools]`` and ``[sandbox]``, every ``@tool``, and the ``[mcp.*]`` servers."""
    project = host.project
    tools_cfg: dict[str, Any] = dict(project.tools) if project else {}
    rules = tools_cfg.get("require_approval", [])
    if not isinstance(rules, list) or not all(isinstance(r, str) and r for r in rules):
        msg = (
            'must be a list of tool names or patterns, e.g. ["system:shell", "fs:delete", "mcp:*"]'
        )
        if isinstance(rules, str):
            msg += f" — the string {rules!r} would not require approval for anything"
        raise _error(project, msg, "tools", "require_approval")
    timeout = tools_cfg.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise _error(project, "must be a positive number of seconds", "tools", "timeout")
    registry = ToolRegistry(require_approval=rules, default_timeout=float(timeout))
    from loom.tools import native

    await native.register(registry, host)
    if "http" in tools_cfg:  # importing httpx costs ~70 ms of loop time: only when used
        from loom.tools import http

        await http.register(registry, host)
    for t in GLOBAL_TOOLS:
        registry.register(t)
    if project and project.mcp:
        from loom.tools import mcp

        await mcp.register(registry, host)
    # A server that failed to start (not `required`) has no tools this run: its rules
    # cannot be checked, and nothing of it can run unapproved.
    down = tuple(f"{name}:" for name in (project.mcp if project else {}))
    unknown = [(r, c) for r, c in registry.unknown_approval_rules() if not r.startswith(down)]
    if unknown:
        names = "; ".join(
            f"{rule!r}" + (f" (did you mean {close!r}?)" if close else "")
            for rule, close in unknown
        )
        raise _error(
            project,
            f"names no registered tool: {names}. Approval can only be required for tools "
            f"that exist (see `loom tools`)",
            "tools",
            "require_approval",
        )
    log.debug("tools: %s", ", ".join(s.name for s in registry.specs()))
    return registry


def _error(project: ProjectConfig | None, message: str, *keys: str) -> ConfigError:
    if project is None:
        return ConfigError(message, key=".".join(keys))
    return project.error(message, *keys)

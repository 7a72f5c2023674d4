"""Building a runtime's tool registry from loom.toml."""

from __future__ import annotations

import difflib
import logging
from typing import TYPE_CHECKING, Any

from loom.errors import ConfigError
from loom.tools.python import GLOBAL_TOOLS
from loom.tools.registry import DEFAULT_TIMEOUT, ToolRegistry, is_pattern, matches

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
    registry.export = export_rules(project)
    remote = tools_cfg.get("remote", False)
    if not isinstance(remote, bool):
        raise _error(project, "must be true or false", "tools", "remote")
    registry.use_remote = remote
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
    _check_export(project, registry, down)
    log.debug("tools: %s", ", ".join(s.name for s in registry.specs()))
    return registry


def export_rules(project: ProjectConfig | None) -> tuple[str, ...]:
    """``[tools] export``: the names and ``fnmatch`` patterns of the tools this process
    serves to others over NATS (docs/tool-hosts.md).

    Raises:
        ConfigError: not a list of non-empty strings.
    """
    rules = dict(project.tools).get("export", []) if project else []
    if not isinstance(rules, list) or not all(isinstance(r, str) and r.strip() for r in rules):
        msg = 'must be a list of tool names or patterns, e.g. ["fs:*", "system:shell"]'
        if isinstance(rules, str):
            msg += f" — write [{rules!r}]"
        raise _error(project, msg, "tools", "export")
    return tuple(rules)


def _check_export(
    project: ProjectConfig | None, registry: ToolRegistry, down: tuple[str, ...]
) -> None:
    """An exact name that names no tool is a typo: an error. A pattern that matches
    none may match tools registered later (an agent's, an MCP server's): a warning."""
    names = [s.name for s in registry.specs()]
    for rule in registry.export:
        if rule.startswith(down) or any(matches(n, (rule,)) for n in names):
            continue
        if is_pattern(rule):
            log.warning("[tools] export: %r matches no tool (yet)", rule)
            continue
        close = difflib.get_close_matches(rule, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _error(project, f"names no registered tool: {rule!r}{hint}", "tools", "export")


def _error(project: ProjectConfig | None, message: str, *keys: str) -> ConfigError:
    if project is None:
        return ConfigError(message, key=".".join(keys))
    return project.error(message, *keys)

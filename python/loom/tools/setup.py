"""Building a runtime's tool registry from loom.toml."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from loom.tools.python import GLOBAL_TOOLS
from loom.tools.registry import DEFAULT_TIMEOUT, ToolRegistry

if TYPE_CHECKING:
    from loom.runtime import Runtime

log = logging.getLogger("loom.tools")


async def build_registry(runtime: Runtime) -> ToolRegistry:
    """The registry for ``runtime``: native tools configured from ``[workspace]``,
    ``[tools]`` and ``[sandbox]``, every ``@tool``, and the ``[mcp.*]`` servers."""
    project = runtime.project
    tools_cfg: dict[str, Any] = dict(project.tools) if project else {}
    registry = ToolRegistry(
        require_approval=tools_cfg.get("require_approval", ()),
        default_timeout=float(tools_cfg.get("timeout", DEFAULT_TIMEOUT)),
    )
    from loom.tools import native

    await native.register(registry, runtime)
    if "http" in tools_cfg:  # importing httpx costs ~70 ms of loop time: only when used
        from loom.tools import http

        await http.register(registry, runtime)
    for t in GLOBAL_TOOLS:
        registry.register(t)
    if project and project.mcp:
        from loom.tools import mcp

        await mcp.register(registry, runtime)
    log.debug("tools: %s", ", ".join(s.name for s in registry.specs()))
    return registry

"""The native tools of the Rust core (``fs:*``, ``system:shell``), sandboxed there."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from loom.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from loom.runtime import Runtime

log = logging.getLogger("loom.tools")


async def register(registry: ToolRegistry, runtime: Runtime) -> None:
    """Registers the native tools (wired to ``loom._core`` by the tools runtime)."""
    from loom import _core

    if not hasattr(_core, "NativeTools"):
        log.debug("this build of loom._core has no native tools")
        return

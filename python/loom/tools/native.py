"""The native tools of the Rust core (``fs:*``, ``system:shell``), sandboxed there.

Calls run on the core's worker threads without the GIL; the asyncio future is
resolved on the loop's thread through the loop's completion port (an eventfd the loop
watches; the workers never take the GIL), so the loop never blocks. The spans the
sandbox recorded (path resolution, the confined process) come back with each result and
are emitted as children of the ``execute_tool`` span.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from loom.errors import ConfigError
from loom.telemetry.state import telemetry_of
from loom.tools.registry import ToolRegistry
from loom.tools.spec import ToolSpec

if TYPE_CHECKING:
    from loom import _core
    from loom._host import ProjectHost
    from loom.config import ProjectConfig

#: Native tools whose second run has the effect of the first: reads, listings, and
#: writes and deletes that are atomic (``system:shell`` may do anything, so it is not).
IDEMPOTENT = frozenset({"fs:read_file", "fs:list_dir", "fs:search", "fs:write_file", "fs:delete"})

log = logging.getLogger("loom.tools")


class NativeTool:
    """One tool of a ``loom._core.NativeTools`` instance."""

    def __init__(self, core: _core.NativeTools, spec: ToolSpec) -> None:
        self._core = core
        self.spec = spec

    async def invoke(self, ctx: Any, args: dict[str, Any], timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, BaseException | None, str]] = loop.create_future()
        handle = self._core.call(self.spec.name, args, timeout, loop, fut)
        try:
            result, error, spans_json = await fut
        except asyncio.CancelledError:
            handle.cancel()  # kills the sandboxed processes
            raise
        if spans_json:
            telemetry = telemetry_of(ctx)
            if telemetry.active:
                from loom.telemetry.tool_spans import emit_native_spans

                emit_native_spans(telemetry, spans_json)
        if error is not None:
            raise error
        return result


def _why_no_native_tools() -> str:
    import os

    from loom.config import PROJECT_ENV

    how = (
        'they need a project: a loom.toml with [workspace] root = "<dir>" (the directory '
        "the tools may touch)"
    )
    if os.environ.get(PROJECT_ENV, "").strip().lower() == "none":
        return f"native tools are off: {PROJECT_ENV}=none loads no project; {how}"
    return (
        f"native tools are not available: this runtime has no project (no loom.toml in "
        f"{os.getcwd()} or above, and {PROJECT_ENV} is not set); {how}, or "
        f"Runtime(project=load_project_config(...))"
    )


def sandbox_config(project: ProjectConfig) -> dict[str, Any]:
    """The JSON the core expects: ``[workspace]`` (root made absolute), ``[sandbox]``,
    ``[tools.fs]`` and ``[tools.shell]``."""
    tools = project.tools
    return {
        "workspace": {"root": str(project.workspace_root)},
        "sandbox": dict(project.sandbox),
        "tools": {k: tools[k] for k in ("fs", "shell") if k in tools},
    }


async def register(registry: ToolRegistry, host: ProjectHost) -> None:
    """Registers the native tools of ``host.project`` (none without a project)."""
    from loom import _core

    project = host.project
    if project is None:
        log.debug("no loom.toml: native tools (fs:*, system:shell) are not registered")
        registry.native_absent = _why_no_native_tools()
        return
    from loom._layout import check_layout

    # Again here, for a ProjectConfig built without parse_project_config (and files
    # that appeared since it was loaded).
    check_layout(project)
    root = project.workspace_root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise project.error(
            f"cannot create the workspace {root}: {exc}", "workspace", "root"
        ) from None
    try:
        core = _core.NativeTools(json.dumps(sandbox_config(project)))
    except ConfigError as exc:
        raise project.error(exc.message, *(exc.key or "").split(".")) from None
    status = core.status()
    shell = status.get("shell", {})
    enforcement = shell.get("enforcement", {})
    log.info(
        "native tools confined to %s (landlock: %s, seccomp: %s, pid namespace: %s, "
        "staged writes: %s)",
        core.workspace,
        enforcement.get("landlock", "?"),
        enforcement.get("seccomp", "?"),
        enforcement.get("pid_namespace", "?"),
        enforcement.get("staged_writes", "?"),
    )
    host.on_shutdown(core.close)
    registry.sandbox_status = status
    for spec in core.specs():
        registry.register(
            NativeTool(
                core,
                ToolSpec(
                    name=spec["name"],
                    description=spec.get("description", ""),
                    parameters=spec.get("parameters") or {"type": "object", "properties": {}},
                    source="native",
                    idempotent=spec["name"] in IDEMPOTENT,
                ),
            )
        )

"""``loom tools [path]``: list the tools agents of a project can call — its own, and with
``[bus] nats`` those other processes export (docs/tool-hosts.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from loom._text import escape_line, shorten

if TYPE_CHECKING:
    from loom.config import ProjectConfig


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tools", help="list the tools (native, @tool, MCP, other hosts') of a project"
    )
    p.add_argument("path", nargs="?", default="loom.toml", help="loom.toml or its directory")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="full specs (JSON schemas) as JSON")
    fmt.add_argument("--openai", action="store_true", help="in the OpenAI `tools` format")
    p.add_argument("--sandbox", action="store_true", help="also show what the sandbox enforces")
    p.add_argument(
        "--local", action="store_true", help="only this project's tools (do not ask [bus] nats)"
    )
    p.set_defaults(func=cmd)


async def _collect(
    project: ProjectConfig, *, remote: bool
) -> tuple[list[Any], dict[str, Any] | None, tuple[str, ...]]:
    """The specs (with other hosts' tools when ``[bus] nats`` and ``[tools] remote`` are
    set and ``remote``),
    the sandbox status and ``[tools] export``."""
    from loom.runtime import Runtime
    from loom.tools.setup import export_rules

    export = export_rules(project)
    # Listing must not serve: the runtime gets the project without its export rules.
    tools = {k: v for k, v in project.tools.items() if k != "export"}
    runtime = Runtime(project.model_copy(update={"tools": tools}))
    try:
        registry = await runtime.get_tools()
        if remote and registry.use_remote and project.bus.get("nats"):
            from loom.errors import BusError
            from loom.nats import connect
            from loom.nats.settings import bus_settings

            settings = bus_settings(project)
            try:
                await connect(runtime, settings.nats, settings=settings, name=project.project.name)
            except BusError as exc:
                print(f"loom: warning: {escape_line(str(exc))}; only local tools", file=sys.stderr)
        return registry.specs(), runtime.sandbox_status, export
    finally:
        await runtime.stop(timeout=5)


def cmd(args: argparse.Namespace) -> int:
    from loom.config import load_project_or_default
    from loom.errors import LoomError
    from loom.tools.registry import matches

    try:
        specs, sandbox, export = asyncio.run(
            _collect(load_project_or_default(args.path), remote=not args.local)
        )
    except LoomError as exc:
        print(f"loom: error: {escape_line(str(exc))}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([s.model_dump() for s in specs], indent=2))
        return 0
    if args.openai:
        print(json.dumps([s.to_openai() for s in specs], indent=2))
        return 0
    if not specs:
        print("no tools registered")
        return 0
    # Names, parameters and descriptions of MCP tools come from the server: escaped.
    width = max(len(escape_line(s.name)) for s in specs)
    for s in specs:
        params = s.parameters.get("properties", {})
        required = set(s.parameters.get("required", []))
        args_text = ", ".join(f"{k}{'' if k in required else '?'}" for k in params)
        flags = " [approval]" if s.requires_approval else ""
        if s.source != "remote" and matches(s.name, export):
            flags += " [exported]"
        source = s.source
        if s.source == "mcp":
            source = f"mcp:{s.server}"
        elif s.source == "remote":
            source = f"remote@{','.join(s.hosts)}"
        print(escape_line(f"{escape_line(s.name):<{width}}  {source:<8} ({args_text}){flags}"))
        if s.description:
            print(f"{'':<{width}}  {shorten(s.description.splitlines()[0], 100)}")
    if args.sandbox and sandbox:
        enforcement = sandbox.get("shell", {}).get("enforcement", {})
        print(f"\nworkspace: {sandbox.get('workspace')}")
        print("sandbox:   " + ", ".join(f"{k}={v}" for k, v in enforcement.items()))
        allow = sandbox.get("shell", {}).get("allow", {})
        print("shell allowlist: " + " ".join(sorted(allow)))
    return 0

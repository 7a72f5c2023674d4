"""``loom tools [path]``: list the tools agents of a project can call."""

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
    p = sub.add_parser("tools", help="list the tools (native, @tool, MCP) of a project")
    p.add_argument("path", nargs="?", default="loom.toml", help="loom.toml or its directory")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="full specs (JSON schemas) as JSON")
    fmt.add_argument("--openai", action="store_true", help="in the OpenAI `tools` format")
    p.add_argument("--sandbox", action="store_true", help="also show what the sandbox enforces")
    p.set_defaults(func=cmd)


async def _collect(project: ProjectConfig) -> tuple[list[Any], dict[str, Any] | None]:
    from loom.runtime import Runtime

    runtime = Runtime(project)
    try:
        registry = await runtime.get_tools()
        return registry.specs(), runtime.sandbox_status
    finally:
        await runtime.stop(timeout=5)


def cmd(args: argparse.Namespace) -> int:
    from loom.config import load_project_or_default
    from loom.errors import LoomError

    try:
        specs, sandbox = asyncio.run(_collect(load_project_or_default(args.path)))
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
        source = s.source if s.source != "mcp" else f"mcp:{s.server}"
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

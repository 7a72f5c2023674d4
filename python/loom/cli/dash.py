"""``loom dash [path]``: the dashboard over the traces of past runs, no agents running."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from loom._text import escape_line


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dash", help="open the dashboard on the traces of past runs")
    p.add_argument(
        "path",
        nargs="?",
        default=".",
        help="a loom.toml, its directory, or a directory of trace files (default: .)",
    )
    p.add_argument("--host", help="address to bind (default: [dashboard] host, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: [dashboard] port, else a free one)")
    p.set_defaults(func=cmd)


def _where(path: Path) -> tuple[Any, Path]:
    """The project (if any) and the trace directory ``path`` means."""
    from loom.config import load_project_config
    from loom.telemetry.setup import resolve_settings

    toml = path if path.name == "loom.toml" else path / "loom.toml"
    if toml.is_file():
        project = load_project_config(toml)
        return project, resolve_settings(project).trace_dir
    if path.is_dir():
        return None, path / ".loom" / "traces" if (path / ".loom").is_dir() else path
    from loom.errors import ConfigError

    raise ConfigError(f"{path}: not a loom.toml, a project directory or a trace directory")


async def _serve(project: Any, trace_dir: Path, host: str | None, port: int | None) -> None:
    from loom._aio import stop_on_signals
    from loom.dashboard.server import Dashboard, serve_until
    from loom.dashboard.settings import dashboard_settings

    settings = dashboard_settings(project)
    update: dict[str, Any] = {}
    if host is not None:
        update["host"] = host
    if port is not None:
        update["port"] = port
    if update:
        settings = settings.model_validate({**settings.model_dump(), **update})
    board = Dashboard(settings, project=project, trace_dir=trace_dir)
    url = await board.start()
    print(f"dashboard: {url}", flush=True)
    print(f"traces in {trace_dir}; Ctrl-C to stop", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await serve_until(board, stop)


def cmd(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from loom.errors import LoomError

    try:
        project, trace_dir = _where(Path(args.path))
        asyncio.run(_serve(project, trace_dir, args.host, args.port))
    except ValidationError as exc:
        print(f"loom dash: error: {escape_line(str(exc.errors()[0]['msg']))}", file=sys.stderr)
        return 2
    except LoomError as exc:
        print(f"loom dash: error: {escape_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0

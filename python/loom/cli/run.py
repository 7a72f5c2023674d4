"""``loom run [path]``: start every agent of a project in one process."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

from loom._text import escape_line
from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.config import ProjectConfig


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run the agents (and job) of a loom.toml")
    p.add_argument("path", nargs="?", default="loom.toml", help="loom.toml or its directory")
    p.add_argument(
        "--provider",
        metavar="NAME",
        help='the LLM provider agents configured with llm = "auto" use (a [llm.NAME] '
        "table or a preset: openai, deepseek, openrouter, ollama, local); default: "
        "OpenAI or DeepSeek if their API key is set, else the local model",
    )
    p.add_argument(
        "--agents",
        metavar="A,B",
        help="start only these agents of the loom.toml (the project split over "
        "processes on one NATS bus); the [job] is then not sent unless --job is given",
    )
    p.add_argument(
        "--dashboard",
        action="store_true",
        default=None,
        help="serve the dashboard while the project runs (prints its URL; [dashboard] "
        "in loom.toml sets host and port); with a [job], keeps running after it until Ctrl-C",
    )
    job = p.add_mutually_exclusive_group()
    job.add_argument(
        "--job", dest="send_job", action="store_true", default=None, help="send the [job]"
    )
    job.add_argument(
        "--no-job", dest="send_job", action="store_false", help="do not send the [job]"
    )
    p.set_defaults(func=cmd)


def _as_the_original_did(project: ProjectConfig) -> None:
    """Scripts of the original layout ran with the project directory as their working
    directory and find their loom.toml with ``load_project_config()``: this process is
    theirs, so it does the same."""
    from loom.config import PROJECT_ENV

    assert project.path is not None
    os.chdir(project.root)
    os.environ[PROJECT_ENV] = str(project.path)


def cmd(args: argparse.Namespace) -> int:
    from loom.app import EXIT_CONFIG, run_project
    from loom.config import load_project_config
    from loom.errors import AgentError, ConfigError

    try:
        project = load_project_config(args.path)
    except ConfigError as exc:
        print(f"loom: error: {escape_line(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    if project.script_files():
        _as_the_original_did(project)
    try:
        agents = [a.strip() for a in args.agents.split(",") if a.strip()] if args.agents else None
        if args.agents is not None and not agents:
            raise ConfigError("--agents: give agent names, comma-separated")
        result = asyncio.run(
            run_project(
                project,
                out=sys.stdout,
                llm_provider=args.provider,
                agents=agents,
                send_job=args.send_job,
                dashboard=args.dashboard,
            )
        )
    except (ConfigError, AgentError) as exc:
        print(f"loom: error: {escape_line(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except LoomError as exc:
        print(f"loom: error: {escape_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    if result.exit_code != 0:
        print(f"loom: {escape_line(result.message)}", file=sys.stderr)
    return result.exit_code

"""``loom chat``: an interactive session with a cognitive agent in the terminal.

Streams the answer as it is generated, shows tool calls and their results, and asks
on the terminal before running a tool that requires approval. Commands: /help,
/history, /clear, /tools, /exit (or Ctrl-D).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom._text import escape_block, escape_line, shorten
from loom.tools import describe_call

if TYPE_CHECKING:
    from loom.config import ProjectConfig

HELP = """commands:
  /help      this help
  /history   the conversation so far
  /clear     forget the conversation
  /tools     the tools the agent can use
  /exit      leave (Ctrl-D works too)
anything else is sent to the agent"""


DEFAULT_MAX_ITERATIONS = 6


def _agent_settings(settings: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """What the agent's table says about the session, the command line first: the
    provider (``llm``, or the original ``llm_provider``), ``max_iterations`` and
    ``thinking_strategy`` (validated by :class:`CognitiveConfig`: a bad value is an
    error naming the table's key). A setting the config lacks would be listed as
    unsupported, to be said, not dropped."""
    from loom.cognitive import CognitiveConfig

    provider = args.provider or settings.get("llm") or settings.get("llm_provider") or "auto"
    iterations = args.max_iterations or settings.get("max_iterations") or DEFAULT_MAX_ITERATIONS
    fields = CognitiveConfig.model_fields
    extra = {k: settings[k] for k in ("thinking_strategy",) if k in settings and k in fields}
    unsupported = [k for k in ("thinking_strategy",) if k in settings and k not in fields]
    return {
        "provider": provider,
        "max_iterations": iterations,
        "extra": extra,
        "unsupported": unsupported,
    }


def add_parser(sub: Any) -> None:
    p = sub.add_parser("chat", help="chat with a cognitive agent in the terminal")
    p.add_argument("path", nargs="?", default="loom.toml", help="loom.toml or its directory")
    p.add_argument("--agent", help="use the settings of [agents.NAME] (system_prompt, llm, tools)")
    p.add_argument(
        "--provider",
        help="LLM provider (default: the agent's `llm` or `llm_provider`, else auto)",
    )
    p.add_argument("--no-tools", action="store_true", help="offer no tools to the model")
    p.add_argument(
        "--max-iterations",
        type=int,
        default=None,
        help=f"LLM turns per answer (default: the agent's max_iterations, else "
        f"{DEFAULT_MAX_ITERATIONS})",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show log lines in the terminal (default: .loom/logs/chat-*.log, errors shown)",
    )
    p.set_defaults(func=cmd)


def _logs_to_file(root: Path) -> Path:
    """Sends log records to ``<root>/.loom/logs/chat-<time>.log`` and keeps only errors
    on the terminal, so log lines never land in the middle of the conversation."""
    import logging
    import time

    from loom._text import SafeFormatter

    path = root / ".loom" / "logs" / f"chat-{time.strftime('%Y%m%dT%H%M%S')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root_logger = logging.getLogger()
    for h in root_logger.handlers:
        if type(h) is logging.StreamHandler:
            h.setLevel(logging.ERROR)
    root_logger.addHandler(handler)
    return path


def _short(value: Any, limit: int = 200) -> str:
    """One line for the terminal: escaped (model text must not drive it), and cut with
    a visible length marker."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = repr(value) if not isinstance(value, (dict, list)) else "(unprintable)"
    return shorten(text, limit)


def _ask_approval(req: Any) -> bool:
    """Runs in a worker thread (the registry keeps sync approvers off the loop)."""
    print(f"\n? approve this call?\n{describe_call(req.tool, req.arguments)}", flush=True)
    try:
        answer = input("  allow? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


async def _session(args: argparse.Namespace, project: ProjectConfig) -> int:
    from pydantic import ValidationError

    from loom.agent import Agent
    from loom.cognitive import CognitiveAgent, CognitiveConfig, RunFinished, ToolResult
    from loom.errors import LoomError
    from loom.llm import TextDelta, ToolCallStart
    from loom.llm.auto import provider_for
    from loom.runtime import Runtime

    settings: dict[str, Any] = {}
    if args.agent:
        if args.agent not in project.agents:
            raise project.error(f"no [agents.{args.agent}] table", "agents")
        settings = project.agents[args.agent].model_dump()
    runtime = Runtime(project)
    agent = Agent(args.agent or "chat", config=settings, runtime=runtime)
    await agent.start()
    try:
        registry = await runtime.get_tools()
        registry.approver = _ask_approval
        session = _agent_settings(settings, args)
        llm = provider_for(agent.ctx, session["provider"])
        tools = [] if args.no_tools else settings.get("tools") or None
        try:
            config = CognitiveConfig(
                system_prompt=settings.get(
                    "system_prompt",
                    "You are a helpful assistant working in the user's project. Use the "
                    "tools when they help, and answer concisely.",
                ),
                max_iterations=session["max_iterations"],
                **session["extra"],
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            key = str(err["loc"][0]) if err["loc"] else ""
            where = ("agents", args.agent, key) if args.agent else ()
            msg = str(err["msg"]).removeprefix("Value error, ")  # pydantic's prefix
            raise project.error(f"{key}: {msg} (got {err.get('input')!r})", *where) from None
        for key in session["unsupported"]:
            # Said out loud, not dropped: this Loom's CognitiveConfig has no such setting.
            print(f"(note: [agents.{args.agent}] {key} is not supported by loom chat; ignored)")
        cognitive = CognitiveAgent(agent.ctx, llm, config, tools=tools)
        offered = [t["function"]["name"] for t in await cognitive.offered_tools()]
        print(f"loom chat — {llm.name} ({llm.model}); {len(offered)} tool(s). /help for help.")
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except EOFError:
                print()
                return 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                cmd = line.split()[0]
                if cmd in ("/exit", "/quit"):
                    return 0
                if cmd == "/help":
                    print(HELP)
                elif cmd == "/clear":
                    cognitive.reset()
                    print("(conversation cleared)")
                elif cmd == "/history":
                    history = cognitive.memory.messages()
                    if not history:
                        print("(no history yet)")
                    for m in history:
                        print(f"{m['role']:>9}: {_short(m.get('content') or '', 300)}")
                elif cmd == "/tools":
                    print("\n".join(escape_line(n) for n in offered) or "(no tools)")
                else:
                    print(f"unknown command {escape_line(cmd)}; /help lists them")
                continue
            print("agent> ", end="", flush=True)
            try:
                async for event in cognitive.run_stream(line):
                    if isinstance(event, TextDelta):
                        print(escape_block(event.text), end="", flush=True)
                    elif isinstance(event, ToolCallStart):
                        print(f"\n  → {_short(event.name, 80)}", end="", flush=True)
                    elif isinstance(event, ToolResult):
                        if event.error:
                            print(
                                f"\n  ✗ {_short(event.name, 80)}: {_short(event.error)}", flush=True
                            )
                        else:
                            print(
                                f"\n  ← {_short(event.name, 80)}: {_short(event.result)}",
                                flush=True,
                            )
                    elif isinstance(event, RunFinished):
                        result = event.result
                        if not result.success:
                            print(f"\n(stopped: {_short(result.error or '', 500)})", flush=True)
                        u = result.usage
                        print(
                            f"\n[{u.prompt_tokens}+{u.completion_tokens} tokens, "
                            f"{result.latency:.1f}s]",
                            flush=True,
                        )
            except LoomError as exc:
                print(f"\nerror: {escape_line(str(exc))}", flush=True)
    finally:
        await runtime.stop(timeout=5)


def cmd(args: argparse.Namespace) -> int:
    from loom.config import load_project_or_default
    from loom.errors import LoomError

    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:  # pragma: no cover - not on every platform
        pass
    try:
        project = load_project_or_default(args.path)
        if not args.verbose:
            log_file = _logs_to_file(project.root)
            print(f"(logs: {log_file}; --verbose shows them here)")
        return asyncio.run(_session(args, project))
    except LoomError as exc:
        print(f"loom: error: {escape_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print()
        return 0

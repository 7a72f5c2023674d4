"""Building agents from ``[agents.<name>]`` tables of loom.toml, and the scripts of the
original layout (:mod:`loom.scripts`) when tables have no ``code``."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from loom.agent import Agent
from loom.config import AgentSpec, ProjectConfig
from loom.errors import AgentError, ConfigError
from loom.runtime import Runtime
from loom.scripts import Script, build_scripts, takes_no_arguments

#: What ``loom run`` starts: agents built from tables, and original-layout scripts.
Startable = Agent | Script


def _import_code(project: ProjectConfig, name: str, code: str) -> tuple[ModuleType, str | None]:
    """Imports an agent's module from a file path or module name (``x.y:attr``)."""
    target, _, attr = code.partition(":")
    where = f"[agents.{name}] code = {code!r}"
    if target.endswith(".py") or "/" in target:
        path = (project.root / target).resolve()
        if not path.is_file():
            raise AgentError(f"{where}: file {path} not found")
        # Agents may import their siblings.
        root = str(project.root)
        if root not in sys.path:
            sys.path.insert(0, root)
        mod_name = f"loom_agents.{name}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise AgentError(f"{where}: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)
            raise AgentError(f"{where}: importing {path} failed: {exc!r}") from exc
        return module, attr or None
    try:
        return importlib.import_module(target), attr or None
    except ImportError as exc:
        raise AgentError(f"{where}: cannot import module {target!r}: {exc}") from exc


def build_agent(
    project: ProjectConfig, name: str, spec: AgentSpec, runtime: Runtime
) -> Agent | Script:
    """Creates the :class:`Agent` described by ``[agents.<name>]``.

    The module provides ``on_event(ctx, topic, event)`` (or the function named by
    ``handler``, or ``code = "module:function"``), and optionally ``on_batch``,
    ``on_start(ctx)``, ``on_stop(ctx)`` and ``main(ctx)``. A module without a handler
    whose ``main()`` takes no arguments, or that builds ``Agent`` objects itself, is an
    original-layout script: it is run as a :class:`~loom.scripts.Script`.
    """
    if spec.code is None:
        raise project.error(
            "missing key 'code' (the agent's file or module), and there is no "
            "agents/*.py script of the original layout to run",
            "agents",
            name,
        )
    module, attr = _import_code(project, name, spec.code)

    def get(fn_name: str) -> Any:
        fn = getattr(module, fn_name, None)
        if fn is not None and not callable(fn):
            raise AgentError(f"[agents.{name}]: {module.__name__}.{fn_name} is not callable")
        return fn

    on_event = get(attr or spec.handler)
    on_batch = get("on_batch") if on_event is None else None
    main = get("main")
    plain_main = main if main is not None and takes_no_arguments(main) else None
    builds_agents = any(isinstance(v, Agent) for v in vars(module).values())
    if on_event is None and on_batch is None and (plain_main or builds_agents):
        # An original-layout script named by `code`: it builds its own agents.
        return Script(Path(module.__file__ or spec.code), runtime, project, module=module)
    if plain_main is not None:
        # Beside a handler, a main() without arguments is the agent's main; it gets
        # no ctx.
        main = lambda ctx: plain_main()  # noqa: E731
    if on_event is None and on_batch is None and main is None:
        raise AgentError(
            f"[agents.{name}] code = {spec.code!r}: the module defines none of "
            f"{attr or spec.handler}(ctx, topic, event), on_batch(ctx, pattern, events) "
            "or main(ctx)"
        )
    if spec.topics and on_event is None and on_batch is None:
        raise AgentError(
            f"[agents.{name}]: topics are set but {module.__name__} has no "
            f"{attr or spec.handler}(ctx, topic, event) handler"
        )
    return Agent(
        name,
        topics=spec.topics,
        on_event=on_event,
        on_batch=on_batch,
        on_start=get("on_start"),
        on_stop=get("on_stop"),
        main=main,
        config=spec.model_dump(),
        qos=spec.qos,
        capacity=spec.capacity,
        max_concurrency=spec.max_concurrency,
        group=spec.group,
        runtime=runtime,
    )


def build_agents(
    project: ProjectConfig, runtime: Runtime, only: Sequence[str] | None = None
) -> list[Startable]:
    """Every enabled agent of the project, in file order, then the scripts of the
    original layout (:meth:`ProjectConfig.script_files`): tables without ``code`` are
    then the scripts' settings, read with ``load_project_config().agents``.

    ``only``: just these agents (``[agents.<name>]`` tables, or scripts by file stem),
    for a project split over processes (``loom run --agents a,b``).

    Raises:
        ConfigError: ``only`` names no agent of the project, or a disabled one.
    """
    paths = project.script_files()
    if only is not None:
        known = {n for n, s in project.agents.items() if s.code is not None or not paths}
        known |= {p.stem for p in paths}
        wanted = list(dict.fromkeys(only))
        for name in wanted:
            if name not in known:
                spec = project.agents.get(name)
                why = (
                    "is disabled (enabled = false)"
                    if spec is not None and not spec.enabled
                    else "is no agent of this project"
                )
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"--agents: {name!r} {why}{hint} (agents: {', '.join(sorted(known))})",
                    path=str(project.path) if project.path else None,
                )
        paths = [p for p in paths if p.stem in wanted]
    scripts = build_scripts(project, runtime, paths)
    has_scripts = bool(project.script_files())
    built: list[Startable] = [
        build_agent(project, name, spec, runtime)
        for name, spec in project.agents.items()
        if spec.enabled
        and (spec.code is not None or not has_scripts)
        and (only is None or name in only)
    ]
    return built + scripts

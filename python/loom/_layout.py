"""The workspace and the files Loom loads or executes are disjoint.

The native tools may write anything inside ``[workspace] root`` (minus the deny list);
Loom itself, at its next start, reads ``loom.toml`` and ``.env``, imports the agents'
code, starts the ``[mcp.*]`` servers — unsandboxed — and reads its own state in
``.loom/``. If one of those lay inside the workspace, an agent could rewrite it and
have code run outside the sandbox: with ``root = "."``, ``fs:write_file loom.toml``
adding an ``[mcp.x]`` server was enough. Protecting those files one by one inside a
writable tree is fragile (renames, new files, a directory moved over them), so the
layout itself is refused: :func:`check_layout` runs when a project is parsed and again
when the native tools are set up, and raises a :class:`ConfigError` at
``[workspace] root`` naming what overlaps and how to fix it.

What must not be inside the workspace (all paths resolved, so symlinks cannot hide an
overlap): ``loom.toml`` itself, ``<project>/.env``, ``<project>/.loom/``, the
``[telemetry] trace_dir`` and ``[llm.*] cache_dir``, the ``[kv] path`` database, every
``[agents.*] code`` file or the package/module it names, the original layout's
``agents/*.py`` scripts, an ``[llm.*] serve`` model file, every directory on Python's
import path (``sys.path``), and for each ``[mcp.*]`` stdio server its ``command``, its
working directory, any argument or ``env`` value naming a path strictly inside the
workspace, and (for a bare command name) the ``PATH`` entries it is looked up in.
Directories Loom owns (``.loom``, trace and cache directories, agent packages) must not
contain the workspace either. An argument equal to the workspace root itself is allowed,
so a file server can be pointed at it.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from loom.config import ProjectConfig

#: How a protected path may not meet the workspace: ``in`` — not inside it (or equal);
#: ``owned`` — a directory of Loom's: neither inside it nor containing it; ``below`` —
#: not strictly inside it (arguments and env values: the root itself may be named).
Mode = Literal["in", "owned", "below"]
Protected = tuple[str, Path, Mode]

_FIX = (
    "point [workspace] root at a subdirectory that holds no project files "
    '(e.g. root = "workspace") and keep those files outside it'
)


def _resolve(base: Path, p: str | Path) -> Path:
    return (base / Path(p).expanduser()).resolve()


def _inside(path: Path, root: Path) -> bool:
    """``path`` is ``root`` or below it."""
    return path == root or root in path.parents


def _protected(project: ProjectConfig) -> Iterator[Protected]:
    """``(what, resolved path, mode)`` for everything Loom loads, executes or keeps
    its state in."""
    root = project.root.resolve()
    cwd = Path.cwd()
    if project.path is not None:
        yield (f"the project file {project.path.name}", project.path.resolve(), "in")
    yield ("the project's .env (read for ${VAR} values)", root / ".env", "in")
    yield ("Loom's state directory .loom/", root / ".loom", "owned")
    # Agents' memory: writable through the tools, it could be forged.
    if project.kv_path is not None:
        yield ("the key-value store ([kv] path)", project.kv_path, "in")
    # Prompts become system messages: writable from inside, they would be an injection.
    yield ("the prompt directory ([prompts] dir)", project.prompt_dir, "owned")
    trace_dir = project.telemetry.get("trace_dir")
    if isinstance(trace_dir, str) and trace_dir:
        yield ("[telemetry] trace_dir", _resolve(root, trace_dir), "owned")
    for name, llm in project.llm.items():
        cache_dir = llm.get("cache_dir")
        if isinstance(cache_dir, str) and cache_dir:
            yield (f"[llm.{name}] cache_dir", _resolve(cwd, cache_dir), "owned")
        serve = llm.get("serve")
        if isinstance(serve, str) and ("/" in serve or serve.endswith(".gguf")):
            yield (f"[llm.{name}] serve (a model file)", _resolve(cwd, serve), "in")
    for name, agent in project.agents.items():
        if agent.code is not None:
            yield from _agent_code(root, name, agent.code)
    for script in project.script_files():
        yield (f"the agent script {script.relative_to(root)}", script.resolve(), "in")
    for entry in sys.path:
        if entry:
            yield (f"the Python import path entry {entry}", Path(entry).resolve(), "in")
    for name, server in project.mcp.items():
        if isinstance(server, dict) and isinstance(server.get("command"), str):
            yield from _mcp_stdio(root, name, server)


def _agent_code(root: Path, name: str, code: str) -> Iterator[Protected]:
    target = code.partition(":")[0]
    what = f"[agents.{name}] code = {code!r}"
    if target.endswith(".py") or "/" in target:
        yield (what, _resolve(root, target), "in")
        return
    # A module name: find where it would be imported from without importing it (the
    # loader puts the project directory first on the import path).
    top = target.split(".")[0]
    if not top.isidentifier():
        return
    try:
        spec = importlib.machinery.PathFinder.find_spec(top, [str(root), *sys.path])
    except (ImportError, ValueError):
        return
    if spec is None:
        return
    for location in spec.submodule_search_locations or ():
        yield (what, Path(location).resolve(), "owned")
    if spec.origin and spec.has_location:
        yield (what, Path(spec.origin).resolve(), "in")


def _mcp_stdio(root: Path, name: str, server: dict[str, object]) -> Iterator[Protected]:
    where = f"[mcp.{name}]"
    cwd_raw = server.get("cwd", ".")
    cwd = _resolve(root, cwd_raw) if isinstance(cwd_raw, str) else root
    yield (f"{where} cwd (the server runs unsandboxed there)", cwd, "in")
    command = str(server["command"])
    if "/" in command:
        yield (f"{where} command = {command!r}", _resolve(cwd, command), "in")
        yield (f"{where} command = {command!r}", _resolve(root, command), "in")
    else:
        for entry in os.environ.get("PATH", "").split(os.pathsep):
            if entry:
                what = f"{where} command {command!r}: the PATH entry {entry}"
                yield (what, _resolve(cwd, entry), "in")
    args = server.get("args", [])
    for arg in args if isinstance(args, list) else ():
        if isinstance(arg, str) and arg:
            for candidate in _path_candidates(arg):
                yield (f"{where} args: {arg!r}", _resolve(cwd, candidate), "below")
    env = server.get("env", {})
    for key, value in env.items() if isinstance(env, dict) else ():
        if isinstance(value, str):
            for part in value.split(os.pathsep):
                if part and "${" not in part:
                    yield (f"{where} env {key}", _resolve(cwd, part), "below")


def _path_candidates(arg: str) -> Iterator[str]:
    yield arg
    if arg.startswith("-") and "=" in arg:
        yield arg.split("=", 1)[1]


def check_layout(project: ProjectConfig) -> None:
    """Refuses a workspace that overlaps what Loom loads, executes or keeps its state in.

    Raises:
        ConfigError: at ``[workspace] root``, naming the overlapping file and key.
    """
    workspace = project.workspace_root
    for what, path, mode in _protected(project):
        if mode == "below":
            overlap = path != workspace and _inside(path, workspace)
        else:
            overlap = _inside(path, workspace) or (mode == "owned" and _inside(workspace, path))
        if overlap:
            relation = "contains" if _inside(path, workspace) else "is inside"
            raise project.error(
                f"the workspace {workspace} {relation} {what} ({path}). The tools may "
                "write anything in the workspace, and Loom loads or runs that file "
                "outside the sandbox, so an agent could take over the next start; "
                f"{_FIX}",
                "workspace",
                "root",
            )

"""``loom.toml``: the project file.

Parsed into pydantic models. Errors name the file, and the line and key where they can
be found. Unknown top-level tables produce a warning, not an error, so files written
for other Loom versions (``[bridge]``, ``[dashboard]``, ...) still load. Sections owned
by a subsystem (``[llm.*]``, ``[tools]``, ``[telemetry]``, ``[mcp.*]``) are kept as raw
tables here and validated by that subsystem, which can use :meth:`ProjectConfig.line_of`
to point at the offending line.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loom._secrets import redacted
from loom.bus import QoS
from loom.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

log = logging.getLogger("loom.config")

#: Top-level tables Loom understands; anything else is warned about and ignored.
KNOWN_TABLES = frozenset(
    {
        "project",
        "agents",
        "job",
        "llm",
        "workspace",
        "tools",
        "sandbox",
        "telemetry",
        "mcp",
        "bus",
        "runtime",
        "prompts",
        "kv",
    }
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectMeta(BaseModel):
    """``[project]``: name and free-form metadata."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "loom-project"
    description: str = ""


class AgentSpec(BaseModel):
    """``[agents.<name>]``: where an agent's code is and what it listens to.

    Keys other than the ones below are free-form settings, passed to the agent as
    ``ctx.config`` (together with these).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    code: str = Field(
        description="A Python file (relative to loom.toml) or a module name, "
        "optionally followed by ':attribute'."
    )
    topics: list[str] = Field(default_factory=list)
    handler: str = "on_event"
    qos: QoS = "reliable"
    capacity: int | None = Field(default=None, ge=1)
    max_concurrency: int = Field(default=16, ge=1)
    #: Queue group: agents with the same group share their topics' events.
    group: str | None = None
    enabled: bool = True

    @field_validator("topics")
    @classmethod
    def _valid_patterns(cls, topics: list[str]) -> list[str]:
        from loom import _core

        for t in topics:
            _core.validate_pattern(t)
        return topics


class JobSpec(_Strict):
    """``[job]``: a request sent when the project starts; ``loom run`` exits when the
    reply arrives (0) or the job fails or times out (non-zero)."""

    topic: str
    type: str = "job"
    payload: Any = None
    timeout: float = Field(default=600.0, gt=0)


class RuntimeSpec(_Strict):
    """``[runtime]``: process-level settings."""

    log_level: str = "INFO"
    shutdown_timeout: float = Field(default=10.0, gt=0)
    restart_backoff_initial: float = Field(default=0.5, gt=0)
    restart_backoff_max: float = Field(default=30.0, gt=0)


class WorkspaceSpec(BaseModel):
    """``[workspace]``: the directory tools may touch. It must hold none of the files
    Loom loads or runs (loom.toml, .env, .loom/, agent code, MCP server files, ...):
    such a layout is refused when the project is loaded."""

    model_config = ConfigDict(extra="allow", frozen=True)
    root: str = "workspace"


class PromptsSpec(_Strict):
    """``[prompts]``: where ``ctx.prompts`` loads prompt files from."""

    dir: str = "prompts"


class KVSpec(_Strict):
    """``[kv]``: the key-value store behind ``ctx.kv`` (see docs/kv.md)."""

    #: ``"sqlite"``, the embedded store (JetStream KV will be another).
    store: Literal["sqlite"] = "sqlite"
    #: The database file, relative to loom.toml; ``":memory:"`` keeps it in memory.
    path: str = ".loom/kv.sqlite3"
    #: ``"normal"``: committed writes survive a crash of the process; ``"full"``: a
    #: power loss too (an fsync per write).
    synchronous: Literal["normal", "full"] = "normal"
    #: Largest encoded value, in bytes (default 1 MiB, NATS' default payload limit).
    max_value_size: int = Field(default=1024 * 1024, ge=1, le=64 * 1024 * 1024)


class ProjectConfig(BaseModel):
    """A parsed ``loom.toml``."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: Path | None = None
    project: ProjectMeta = Field(default_factory=ProjectMeta)
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    job: JobSpec | None = None
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    workspace: WorkspaceSpec = Field(default_factory=WorkspaceSpec)
    prompts: PromptsSpec = Field(default_factory=PromptsSpec)
    kv: KVSpec = Field(default_factory=KVSpec)
    llm: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tools: dict[str, Any] = Field(default_factory=dict)
    sandbox: dict[str, Any] = Field(default_factory=dict)
    telemetry: dict[str, Any] = Field(default_factory=dict)
    mcp: dict[str, dict[str, Any]] = Field(default_factory=dict)
    bus: dict[str, Any] = Field(default_factory=dict)
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)
    source: str = Field(default="", repr=False)

    def __repr_args__(self) -> Any:
        # The raw tables hold API keys, header and env tables, URLs with credentials.
        for name, value in super().__repr_args__():
            yield name, redacted(value, name or "")

    @property
    def root(self) -> Path:
        """The project directory (where loom.toml is; the cwd if there is none)."""
        return self.path.parent if self.path else Path.cwd()

    @property
    def prompt_dir(self) -> Path:
        """The absolute ``[prompts] dir``."""
        return (self.root / self.prompts.dir).resolve()

    @property
    def kv_path(self) -> Path | None:
        """The absolute ``[kv] path`` (None: in memory, or no loom.toml)."""
        if self.path is None or self.kv.path == ":memory:":
            return None
        return (self.root / Path(self.kv.path).expanduser()).resolve()

    @property
    def workspace_root(self) -> Path:
        """The absolute workspace directory."""
        return (self.root / self.workspace.root).resolve()

    def line_of(self, *keys: str) -> int | None:
        """The 1-based line of ``keys`` (e.g. ``("llm", "openai", "model")``), if found."""
        return _line_of(self.source, keys)

    def error(self, message: str, *keys: str) -> ConfigError:
        """A :class:`ConfigError` pointing at ``keys`` in this file."""
        return ConfigError(
            message,
            path=str(self.path) if self.path else None,
            line=self.line_of(*keys),
            key=".".join(keys) or None,
        )


def _line_of(source: str, keys: tuple[str, ...]) -> int | None:
    """Best-effort location of a dotted key in TOML source.

    Finds the deepest ``[table]`` header that is a prefix of ``keys`` and then the
    ``key =`` line inside it; falls back to the header line.
    """
    if not source or not keys:
        return None
    lines = source.splitlines()
    header_re = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    best: tuple[int, int] | None = None  # (depth, line index)
    for i, line in enumerate(lines):
        m = header_re.match(line)
        if not m:
            continue
        parts = tuple(p.strip().strip('"').strip("'") for p in m.group(1).split("."))
        if keys[: len(parts)] == parts and (best is None or len(parts) > best[0]):
            best = (len(parts), i)
    depth, start = best if best else (0, -1)
    rest = keys[depth:]
    if not rest:
        return start + 1 if start >= 0 else None
    key_re = re.compile(r"^\s*[\"']?" + re.escape(rest[0]) + r"[\"']?\s*(=|\.)")
    for i in range(start + 1, len(lines)):
        if header_re.match(lines[i]):
            break
        if key_re.match(lines[i]):
            return i + 1
    return start + 1 if start >= 0 else None


def _toml_error(path: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    msg = str(exc)
    m = re.search(r"line (\d+)", msg)
    line = int(m.group(1)) if m else None
    detail = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
    col = re.search(r"column (\d+)", msg)
    suffix = f" (column {col.group(1)})" if col else ""
    return ConfigError(f"invalid TOML: {detail}{suffix}", path=path, line=line)


def parse_project_config(source: str, path: Path | None = None) -> ProjectConfig:
    """Parses loom.toml text. ``path`` is used in errors and to resolve relative paths.

    Raises:
        ConfigError: invalid TOML or invalid values (names the line and key), or a
            workspace that overlaps the files Loom loads or runs (see
            :func:`loom._layout.check_layout`).
    """
    where = str(path) if path else "<loom.toml>"
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(where, exc) from None
    for table in data:
        if table not in KNOWN_TABLES:
            line = _line_of(source, (table,))
            log.warning(
                "%s%s: ignoring unknown table [%s]",
                where,
                f":{line}" if line else "",
                table,
            )
    known = {k: v for k, v in data.items() if k in KNOWN_TABLES}
    try:
        project = ProjectConfig(path=path, raw=data, source=source, **known)
    except ValidationError as exc:
        err = exc.errors()[0]
        keys = tuple(str(k) for k in err["loc"])
        msg = err["msg"]
        if err["type"] == "missing":
            msg = f"missing required key {keys[-1]!r}"
        elif err["type"] == "value_error" and "ctx" in err and "error" in err["ctx"]:
            msg = str(err["ctx"]["error"])
        elif err["type"] == "extra_forbidden":
            msg = f"unknown key {keys[-1]!r}"
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise ConfigError(
            msg + extra, path=where, line=_line_of(source, keys), key=".".join(keys)
        ) from None
    from loom._layout import check_layout

    check_layout(project)
    return project


def load_project_config(path: str | Path = "loom.toml") -> ProjectConfig:
    """Reads and parses a loom.toml. A directory means ``<dir>/loom.toml``.

    Raises:
        ConfigError: the file is missing, unreadable or invalid.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "loom.toml"
    try:
        source = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(p)) from None
    return parse_project_config(source, p.resolve())


#: Environment variable naming the project a script's default runtime loads (a
#: loom.toml or its directory); ``none`` loads none.
PROJECT_ENV = "LOOM_PROJECT"


def find_project_file(start: Path | None = None) -> Path | None:
    """The nearest ``loom.toml`` from ``start`` (default: the current directory) up."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / "loom.toml"
        if candidate.is_file():
            return candidate
    return None


def discover_project(environ: Mapping[str, str] | None = None) -> ProjectConfig | None:
    """The project a script's default runtime uses, found the way ``loom run`` finds
    one: ``$LOOM_PROJECT`` (a loom.toml or a directory holding one; ``none`` for no
    project) if set, else the nearest ``loom.toml`` from the current directory upward.

    Raises:
        ConfigError: the file named by ``LOOM_PROJECT`` is missing, or the file found is
            invalid (file, line and key).
    """
    env = os.environ if environ is None else environ
    named = env.get(PROJECT_ENV, "").strip()
    if named.lower() == "none":
        log.info("no project loaded (%s=none)", PROJECT_ENV)
        return None
    if named:
        path = Path(named)
        target = path / "loom.toml" if path.is_dir() else path
        if not target.is_file():
            raise ConfigError(f"file not found (from {PROJECT_ENV})", path=str(target))
    else:
        found = find_project_file()
        if found is None:
            log.debug("no loom.toml in %s or above: no project loaded", Path.cwd())
            return None
        target = found
    project = load_project_config(target)
    log.info("project: %s", project.path)
    return project


def load_project_or_default(path: str | Path = "loom.toml") -> ProjectConfig:
    """Like :func:`load_project_config`, but a missing *default* ``loom.toml`` gives an
    empty project (commands like ``loom chat`` work outside a project); a path the user
    named must exist."""
    p = Path(path)
    target = p / "loom.toml" if p.is_dir() else p
    if not target.is_file() and str(path) == "loom.toml":
        return parse_project_config("")
    return load_project_config(p)


__all__ = [
    "PROJECT_ENV",
    "AgentSpec",
    "JobSpec",
    "KVSpec",
    "ProjectConfig",
    "ProjectMeta",
    "PromptsSpec",
    "RuntimeSpec",
    "WorkspaceSpec",
    "discover_project",
    "find_project_file",
    "load_project_config",
    "load_project_or_default",
    "parse_project_config",
]

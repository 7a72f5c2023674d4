"""``loom.toml``: the project file.

Parsed into pydantic models. Errors name the file, and the line and key where they can
be found. Unknown top-level tables produce a warning, not an error, so files written
for other Loom versions (``[bridge]``, ...) still load. Sections owned
by a subsystem (``[llm.*]``, ``[tools]``, ``[telemetry]``, ``[mcp.*]``) are kept as raw
tables here and validated by that subsystem, which can use :meth:`ProjectConfig.line_of`
to point at the offending line.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    field_validator,
)
from pydantic_core import core_schema

from loom._secrets import redacted
from loom._toml import line_of, toml_error, tomllib, top_level_line
from loom.bus import QoS
from loom.errors import ConfigError

log = logging.getLogger("loom.config")

_M = TypeVar("_M", bound=BaseModel)

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
        "durability",
        "dashboard",
    }
)


#: Top-level tables of the original Loom that this one does not need, and why.
ORIGINAL_TABLES = {
    "bridge": "agents share one in-process runtime; there is no bridge to connect to",
}

#: Top-level keys of the original layout that belong to ``[project]``.
PROJECT_KEYS = ("name", "version", "description")

#: Entry points beside loom.toml the original ``loom run`` also ran (the first found).
SCRIPT_ENTRY_POINTS = ("main.py", "run.py", "app.py")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectMeta(BaseModel):
    """``[project]``: name and free-form metadata. The original layout's top-level
    ``name``, ``version`` and ``description`` keys land here too."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "loom-project"
    version: str = ""
    description: str = ""


class _AgentFields(BaseModel):
    """The keys of ``[agents.<name>]`` Loom reads itself (validated); other keys are
    the agent's own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    code: str | None = Field(
        default=None,
        description="A Python file (relative to loom.toml) or a module name, "
        "optionally followed by ':attribute'. Without it the table only holds settings "
        "for the scripts of the original layout (``agents/*.py``, see "
        ":meth:`ProjectConfig.script_files`).",
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


class AgentSpec(dict[str, Any]):
    """``[agents.<name>]``: where an agent's code is, what it listens to, and its
    settings.

    A read-only ``dict`` of the whole table (defaults filled in), so code written for
    plain tables keeps working — ``config.agents.get(name, {}).get("model")``,
    ``spec["topics"]``, ``json.dumps(spec)`` — with the keys Loom reads as typed
    attributes (``spec.code``, ``spec.topics``, ``spec.qos``, ...). Other keys are
    free-form settings, also readable as attributes; the agent gets the whole table
    as ``ctx.config``. Copy it with ``dict(spec)`` to change it.

    Raises:
        pydantic.ValidationError: when built directly from invalid values (inside
            :func:`parse_project_config` that becomes a :class:`ConfigError` naming
            the line and key).
    """

    __slots__ = ("_fields",)
    _fields: _AgentFields

    def __init__(
        self, table: Mapping[str, Any] | _AgentFields | None = None, /, **keys: Any
    ) -> None:
        if isinstance(table, _AgentFields) and not keys:
            fields = table
        else:
            fields = _AgentFields.model_validate({**dict(table or {}), **keys})
        super().__init__(fields.model_dump())
        self._fields = fields

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Validated as the model (errors keep their location: agents.<name>.<key>),
        # then wrapped; serialised as the plain table.
        return core_schema.no_info_after_validator_function(
            cls,
            handler.generate_schema(_AgentFields),
            serialization=core_schema.plain_serializer_function_ser_schema(dict),
        )

    # -- the keys Loom reads -----------------------------------------------------------

    @property
    def code(self) -> str | None:
        """The agent's module (file or module name, ``:attr`` optional); None for a
        settings-only table of the original layout."""
        return self._fields.code

    @property
    def topics(self) -> list[str]:
        return list(self._fields.topics)

    @property
    def handler(self) -> str:
        """The module function called for each event (default ``on_event``)."""
        return self._fields.handler

    @property
    def qos(self) -> QoS:
        return self._fields.qos

    @property
    def capacity(self) -> int | None:
        return self._fields.capacity

    @property
    def max_concurrency(self) -> int:
        return self._fields.max_concurrency

    @property
    def group(self) -> str | None:
        return self._fields.group

    @property
    def enabled(self) -> bool:
        return self._fields.enabled

    @property
    def model_extra(self) -> dict[str, Any]:
        """The free-form settings (every key Loom does not read itself)."""
        return dict(self._fields.model_extra or {})

    @property
    def model_fields_set(self) -> set[str]:
        """The keys the table sets (the others have their default)."""
        return set(self._fields.model_fields_set)

    def model_dump(self) -> dict[str, Any]:
        """The table as a plain (mutable) ``dict``."""
        return dict(self)

    def __getattr__(self, name: str) -> Any:
        # Free-form settings as attributes, as on the pydantic model this replaced.
        if not name.startswith("_") and name in self:
            return self[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- read-only: one project is shared by every agent of the runtime ----------------

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("an [agents.*] table is read-only; change a copy: dict(spec)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))

    def __copy__(self) -> AgentSpec:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> AgentSpec:
        return self

    def __repr__(self) -> str:
        return f"AgentSpec({dict.__repr__(self)})"


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
    durability: dict[str, Any] = Field(default_factory=dict)
    dashboard: dict[str, Any] = Field(default_factory=dict)
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

    # The original ProjectConfig had these at the top level.
    @property
    def name(self) -> str:
        """``[project] name``."""
        return self.project.name

    @property
    def version(self) -> str:
        """``[project] version``."""
        return self.project.version

    @property
    def description(self) -> str:
        """``[project] description``."""
        return self.project.description

    def script_files(self) -> list[Path]:
        """The scripts of the original layout that ``loom run`` executes: when some
        ``[agents.*]`` table has no ``code`` (or there are no tables at all), every
        ``agents/*.py`` beside loom.toml (sorted; names starting with ``_`` are
        helpers, not scripts; files some ``code`` key names are modules, not
        scripts), then the first of ``main.py``, ``run.py``, ``app.py`` — as the
        original ``loom run`` found them. A table whose name is a script's stem (or
        the stem plus ``-agent``) with ``enabled = false`` leaves that script out."""
        if self.path is None:
            return []
        if self.agents and all(a.code is not None for a in self.agents.values()):
            return []
        root = self.root
        modules = {
            (root / a.code.partition(":")[0]).resolve()
            for a in self.agents.values()
            if a.code is not None and (a.code.endswith(".py") or "/" in a.code)
        }
        off = {n.replace("_", "-") for n, a in self.agents.items() if not a.enabled}
        agents_dir = root / "agents"
        found = sorted(agents_dir.glob("*.py")) if agents_dir.is_dir() else []
        for entry in SCRIPT_ENTRY_POINTS:
            if (root / entry).is_file():
                found.append(root / entry)
                break
        out = []
        for path in found:
            stem = path.stem.replace("_", "-")
            if path.name.startswith("_") or path.resolve() in modules:
                continue
            if stem in off or f"{stem}-agent" in off:
                continue
            out.append(path)
        return out

    def line_of(self, *keys: str) -> int | None:
        """The 1-based line of ``keys`` (e.g. ``("llm", "openai", "model")``), if found."""
        return line_of(self.source, keys)

    def error(self, message: str, *keys: str) -> ConfigError:
        """A :class:`ConfigError` pointing at ``keys`` in this file."""
        return ConfigError(
            message,
            path=str(self.path) if self.path else None,
            line=self.line_of(*keys),
            key=".".join(keys) or None,
        )

    def validated(self, model: type[_M], table: str, data: Mapping[str, Any]) -> _M:
        """``data`` (the ``[table]`` of this file) as ``model``; the first problem is a
        :class:`ConfigError` naming file, line and key (with a close match for a
        misspelt key).

        Raises:
            ConfigError: an unknown key or a bad value.
        """
        try:
            return model.model_validate(dict(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            keys = [str(k) for k in first["loc"] if isinstance(k, str)]
            if first["type"] == "extra_forbidden":
                close = difflib.get_close_matches(keys[-1], sorted(model.model_fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                message = f"unknown key {keys[-1]!r}{hint}"
            else:
                message = first["msg"].removeprefix("Value error, ")
                if "input" in first and not isinstance(first["input"], (dict, list)):
                    message = f"{message} (got {first['input']!r})"
            raise self.error(message, table, *keys) from None


def _original_project_keys(data: dict[str, Any], source: str, where: str) -> dict[str, Any]:
    """Moves the original layout's top-level ``name``/``version``/``description`` into
    ``[project]``; the same key with another value in both places is an error."""
    moved = {k: data[k] for k in PROJECT_KEYS if k in data and not isinstance(data[k], dict)}
    if not moved:
        return data
    project = data.get("project", {})
    if not isinstance(project, dict):
        return data  # reported by the model: [project] must be a table
    for key, value in moved.items():
        if key in project and project[key] != value:
            raise ConfigError(
                f"top-level {key} = {value!r} conflicts with [project] {key} = "
                f"{project[key]!r} (line {line_of(source, ('project', key))}); keep one",
                path=where,
                line=top_level_line(source, key),
                key=key,
            )
    rest = {k: v for k, v in data.items() if k not in moved}
    rest["project"] = {**moved, **project}
    return rest


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
        raise toml_error(where, exc) from None
    raw = data
    data = _original_project_keys(data, source, where)
    for table, value in data.items():
        if table in KNOWN_TABLES:
            continue
        line = line_of(source, (table,))
        at = f"{where}:{line}" if line else where
        if table in ORIGINAL_TABLES:
            log.warning("%s: ignoring [%s]: %s", at, table, ORIGINAL_TABLES[table])
        elif isinstance(value, dict):
            log.warning("%s: ignoring unknown table [%s]", at, table)
        else:
            log.warning("%s: ignoring unknown top-level key %r", at, table)
    known = {k: v for k, v in data.items() if k in KNOWN_TABLES}
    try:
        project = ProjectConfig(path=path, raw=raw, source=source, **known)
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
            msg + extra, path=where, line=line_of(source, keys), key=".".join(keys)
        ) from None
    from loom._layout import check_layout

    check_layout(project)
    return project


def load_project_config(path: str | Path | None = None) -> ProjectConfig:
    """Reads and parses a loom.toml. A directory means ``<dir>/loom.toml``.

    Without ``path``: the file named by ``$LOOM_PROJECT`` (unless ``none``), else the
    nearest ``loom.toml`` from the current directory upward — what a script of the
    original layout, run by ``loom run`` (or by hand inside the project), means by
    ``load_project_config()``.

    Raises:
        ConfigError: the file is missing, unreadable or invalid.
    """
    if path is None:
        named = os.environ.get(PROJECT_ENV, "").strip()
        found = Path(named) if named and named.lower() != "none" else find_project_file()
        if found is None:
            raise ConfigError(f"no loom.toml in {Path.cwd()} or above")
        path = found
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

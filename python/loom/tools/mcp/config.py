"""``[mcp.<name>]`` tables: validated into :class:`StdioServer` / :class:`HttpServer`.

.. code-block:: toml

    [mcp.notes]                      # stdio: Loom starts the process
    command = "uvx"
    args = ["notes-mcp", "--db", "notes.db"]
    env = { NOTES_TOKEN = "${NOTES_TOKEN}" }   # the only variables beyond the base set
                                     # (${VAR:-default} too; see loom._envvars)
    cwd = "."                        # relative to loom.toml; default: its directory
    required = true                  # fail start-up if it can't start (default false)

    [mcp.search]                     # streamable HTTP: Loom connects
    url = "https://mcp.example.com/mcp"
    headers = { Authorization = "Bearer ${SEARCH_TOKEN}" }
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from loom._envvars import expand
from loom._secrets import safe_repr
from loom.errors import ConfigError, MissingEnvironmentVariable

if TYPE_CHECKING:
    from loom.config import ProjectConfig

#: Variables a stdio server inherits from Loom's environment: enough to find and run
#: a program, nothing secret. Everything else (API keys!) must be listed in ``env``.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
)

#: Seconds a server has to start and answer ``initialize`` and ``tools/list``.
DEFAULT_STARTUP_TIMEOUT = 30.0

SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_COMMON_KEYS = {"required", "enabled", "startup_timeout"}
_STDIO_KEYS = _COMMON_KEYS | {"command", "args", "env", "cwd"}
_HTTP_KEYS = _COMMON_KEYS | {"url", "headers"}


@dataclass(frozen=True, repr=False)
class ServerConfig:
    """What every MCP server table has.

    ``repr``/``str`` mask ``env`` and ``headers`` values and URL credentials
    (:mod:`loom._secrets`): they hold expanded ``${VAR}`` secrets.
    """

    name: str
    #: A server that cannot start makes the runtime fail (``ConfigError``) instead of
    #: just leaving its tools out.
    required: bool = False
    #: Seconds to start and complete ``initialize`` and ``tools/list``.
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT

    def __repr__(self) -> str:
        return safe_repr(self)


@dataclass(frozen=True, repr=False)
class StdioServer(ServerConfig):
    """A server Loom runs as a child process, speaking newline-delimited JSON-RPC on
    its stdin/stdout."""

    command: str = ""
    args: tuple[str, ...] = ()
    #: The child's complete environment: :data:`INHERITED_ENV` from Loom's, plus the
    #: table's ``env`` (with ``${VAR}`` expanded).
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = Path()


@dataclass(frozen=True, repr=False)
class HttpServer(ServerConfig):
    """A server Loom connects to over streamable HTTP."""

    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


def parse_server(
    name: str,
    table: Mapping[str, Any],
    project: ProjectConfig,
    environ: Mapping[str, str] | None = None,
) -> StdioServer | HttpServer | None:
    """Validates ``[mcp.<name>]``; ``None`` when it has ``enabled = false``.

    Raises:
        ConfigError: an invalid table or an unset ``${VAR}`` (names the file, line,
            key and variable).
    """
    environ = os.environ if environ is None else environ

    def err(msg: str, *keys: str) -> ConfigError:
        return project.error(msg, "mcp", name, *keys)

    if not SERVER_NAME_RE.match(name):
        raise err(
            f"invalid MCP server name {name!r}: use letters, digits, '_', '-' or '.' "
            "(it prefixes the tool names, '<name>:<tool>')"
        )
    if not isinstance(table, Mapping):
        raise err("must be a table")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise err(f"must be true or false (got {enabled!r})", "enabled")
    if not enabled:
        return None
    has_cmd, has_url = "command" in table, "url" in table
    if has_cmd == has_url:
        raise err(
            "needs exactly one of 'command' (a stdio server Loom starts) or 'url' "
            "(a streamable HTTP server Loom connects to)"
        )
    allowed = _STDIO_KEYS if has_cmd else _HTTP_KEYS
    for key in table:
        if key not in allowed:
            raise err(
                f"unknown key {key!r} for a {'stdio' if has_cmd else 'streamable HTTP'} "
                f"MCP server (allowed: {', '.join(sorted(allowed))})",
                key,
            )
    required = table.get("required", False)
    if not isinstance(required, bool):
        raise err(f"must be true or false (got {required!r})", "required")
    startup = table.get("startup_timeout", DEFAULT_STARTUP_TIMEOUT)
    if isinstance(startup, bool) or not isinstance(startup, (int, float)) or startup <= 0:
        raise err(f"must be a positive number of seconds (got {startup!r})", "startup_timeout")

    def str_table(key: str) -> dict[str, str]:
        raw = table.get(key, {})
        if not isinstance(raw, Mapping):
            raise err("must be a table of strings", key)
        out: dict[str, str] = {}
        for k, v in raw.items():
            if not isinstance(v, str):
                raise err(f"must be a string (got {v!r})", key, k)

            def missing(var: str, k: str = k) -> NoReturn:
                e = err(f"environment variable {var} is not set (referenced as ${{{var}}})", key, k)
                raise MissingEnvironmentVariable(
                    var, e.message, path=e.path, line=e.line, key=e.key
                )

            # A child may well be given an empty variable: only an unset one is missing.
            out[str(k)] = expand(v, environ, missing, empty_is_unset=False)
        return out

    if has_url:
        url = table["url"]
        if not isinstance(url, str):
            raise err(f"must be a string (got {url!r})", "url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise err(f"must be an http:// or https:// URL (got {url!r})", "url")
        return HttpServer(
            name=name,
            required=required,
            startup_timeout=float(startup),
            url=url,
            headers=str_table("headers"),
        )

    command = table["command"]
    if not isinstance(command, str) or not command.strip():
        raise err(f"must be a non-empty string (got {command!r})", "command")
    args = table.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise err(f"must be a list of strings (got {args!r})", "args")
    cwd_raw = table.get("cwd", ".")
    if not isinstance(cwd_raw, str):
        raise err(f"must be a string (got {cwd_raw!r})", "cwd")
    env = {k: environ[k] for k in INHERITED_ENV if k in environ}
    env.update(str_table("env"))
    return StdioServer(
        name=name,
        required=required,
        startup_timeout=float(startup),
        command=command,
        args=tuple(args),
        env=env,
        cwd=(project.root / cwd_raw).resolve(),
    )

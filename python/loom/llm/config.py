"""``LLMConfig``: one provider's settings, and how ``[llm.<name>]`` in loom.toml becomes one.

Resolution order for :meth:`LLMProvider.from_name`: the ``[llm.<name>]`` table of
loom.toml, merged over the built-in preset of the same name (``openai``, ``deepseek``,
``openrouter``, ``ollama``, ``local``), else the preset alone.

String values may reference the environment as ``${VAR}`` (the original Loom's
``api_key = "${DEEPSEEK_API_KEY}"``). ``.env`` next to loom.toml is read first but never
overrides a variable that is already set. An unset variable is a :class:`ConfigError`
naming it and the provider, raised before anything is sent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from loom._envvars import environment, expand
from loom._envvars import read_dotenv as read_dotenv
from loom._secrets import redact_url
from loom.errors import ConfigError, MissingEnvironmentVariable

from ._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
)


class Pricing(BaseModel):
    """Prices in USD per 1M tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(default=0.0, ge=0)
    """Prompt tokens that were not served from the provider's prompt cache."""
    output: float = Field(default=0.0, ge=0)
    """Completion tokens (reasoning tokens included, as providers bill them)."""
    cached_input: float | None = Field(default=None, ge=0)
    """Prompt tokens served from cache; defaults to the ``input`` price."""


class LLMConfig(BaseModel):
    """Settings of one OpenAI-compatible provider.

    Unknown keys are rejected so a typo in loom.toml is reported with its key instead of
    being silently ignored. The API key is a :class:`~pydantic.SecretStr`: it never shows
    in ``repr``, ``str`` or ``model_dump_json``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    name: str = "custom"
    """Provider name (the ``<name>`` of ``[llm.<name>]``); used in logs, spans, limits."""
    type: Literal["http", "openai"] = "http"
    """Wire protocol. Both values mean the OpenAI-compatible chat completions API."""
    base_url: str = Field(default="", validation_alias=AliasChoices("base_url", "api_base"))
    """Base URL ending before ``/chat/completions``, e.g. ``https://api.openai.com/v1``.
    Also accepted as ``api_base``. Empty when ``serve`` starts a local server."""
    model: str = ""
    """Model name sent with every request."""
    api_key: SecretStr | None = None
    """The key itself (prefer ``api_key_env`` or ``"${VAR}"`` in loom.toml)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the key."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0)
    """Seconds a read may stall (per attempt). ``timeout_ms`` and ``timeout_sec`` are
    accepted too."""
    connect_timeout: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0)
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, le=20)
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers sent with every request."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra top-level JSON fields merged into every request body (``top_p``, ``seed``...)."""
    rpm: int | None = Field(default=None, gt=0)
    """Requests per minute, shared by every agent of the process using this provider."""
    tpm: int | None = Field(default=None, gt=0)
    """Tokens per minute (prompt estimate + completion), shared likewise."""
    max_concurrency: int | None = Field(default=None, gt=0)
    """Requests in flight at once, shared likewise."""
    prices: Pricing | None = None
    """USD per 1M tokens; overrides the built-in price table for this model."""
    budget_usd: float | None = Field(default=None, gt=0)
    """Once this provider has spent this much in the process, calls raise
    :class:`~loom.llm.errors.BudgetExceeded`."""
    fallbacks: list[str] = Field(default_factory=list)
    """Providers to try, in order, on connection errors, timeouts, 5xx and exhausted 429s."""
    cache: bool | Literal["memory", "disk"] = False
    """Response cache: ``false`` (default), ``"memory"``, or ``"disk"``/``true``
    (``.loom/cache`` plus memory)."""
    cache_ttl: float = Field(default=3600.0, gt=0)
    cache_dir: str | None = None
    quirks: str | None = None
    """Force a quirk profile (``openai``, ``deepseek``, ``openrouter``, ``ollama``,
    ``llamacpp``, ``generic``) instead of guessing from ``base_url``."""
    stream_usage: bool | None = None
    """Send ``stream_options.include_usage``; default from the quirk profile."""
    json_schema: bool | None = None
    """Server supports ``response_format`` ``json_schema``; default from the quirk profile."""
    transport: Literal["auto", "aiohttp", "httpx"] = "auto"
    """HTTP transport under the httpx client: ``auto`` uses httpx-aiohttp when installed
    (several times faster, see docs/performance.md), else httpx's own."""
    max_response_bytes: int = Field(default=MAX_RESPONSE_BYTES, gt=0)
    serve: str | None = None
    """``"smollm2"`` or a path to a ``.gguf``: Loom starts a llama.cpp server for it on a
    free loopback port and stops it at shutdown."""
    serve_args: list[str] = Field(default_factory=list)
    """Extra command-line arguments for ``python -m llama_cpp.server``."""
    serve_ctx: int = Field(default=2048, gt=0)
    serve_chat_format: str = "chatml-function-calling"

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        # The seed spells it timeout_ms, the original Loom timeout_sec.
        if "timeout_ms" in data:
            ms = data.pop("timeout_ms")
            if isinstance(ms, (int, float)) and not isinstance(ms, bool):
                data.setdefault("timeout", ms / 1000.0)
            else:
                data.setdefault("timeout", ms)
        if "timeout_sec" in data:
            data.setdefault("timeout", data.pop("timeout_sec"))
        return data

    def __repr_args__(self) -> Any:
        # Short, and free of secrets: no headers or extra_body; the URL without its
        # credentials (loom._secrets); the key is a SecretStr.
        yield "name", self.name
        yield "base_url", redact_url(self.base_url)
        yield "model", self.model
        yield "api_key", self.api_key

    def resolved_api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        """The API key in clear: ``api_key``, else the ``api_key_env`` variable.

        Raises:
            ConfigError: ``api_key_env`` names a variable that is not set.
        """
        if self.api_key is not None:
            value = self.api_key.get_secret_value()
            return value or None
        if self.api_key_env:
            env = os.environ if env is None else env
            from_env = env.get(self.api_key_env)
            if not from_env:
                raise ConfigError(
                    f"environment variable {self.api_key_env} is not set "
                    f"(the API key of LLM provider {self.name!r}); nothing was sent",
                    key=f"llm.{self.name}.api_key_env",
                )
            return from_env
        return None

    def secret_values(self) -> list[str]:
        """Every secret this config could put on the wire, for redaction."""
        out: list[str] = []
        if self.api_key is not None:
            out.append(self.api_key.get_secret_value())
        if self.api_key_env:
            v = os.environ.get(self.api_key_env)
            if v:
                out.append(v)
        for k, v in self.headers.items():
            if k.lower() in {"authorization", "api-key", "x-api-key", "proxy-authorization"}:
                out.append(v)
                out.append(v.split(" ", 1)[-1])
        return [s for s in out if s]


def merge_config(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> LLMConfig:
    """``base`` settings with ``overrides`` on top, validated (an unknown key is an
    error). An alias in ``overrides`` (``timeout_ms``, ``timeout_sec``, ``api_base``)
    replaces the field it stands for.

    Raises:
        pydantic.ValidationError: an unknown key or a bad value.
    """
    data = dict(base)
    if "timeout_ms" in overrides or "timeout_sec" in overrides:
        data.pop("timeout", None)
    if "api_base" in overrides:
        data.pop("base_url", None)
    data.update(overrides)
    return LLMConfig.model_validate(data)


#: What a llama-cpp-python server needs from its client, whether Loom starts it
#: (``serve = ...``, the ``local`` preset) or it is already running
#: (:meth:`LocalModelServer.llm_config <loom.llm.LocalModelServer.llm_config>`).
LLAMA_SERVER: dict[str, Any] = {
    # The server handles one request at a time; queueing here keeps waiting requests
    # from burning their read timeout on the server's queue.
    "max_concurrency": 1,
    # A small model on a CPU can take a while for a long answer.
    "timeout": 120.0,
}

#: Built-in presets. ``local`` is the no-API-key default: Loom serves SmolLM2-135M itself.
PRESETS: dict[str, dict[str, Any]] = {
    "openai": {
        "base_url": "https://api.openai.com/v1",
        "model": "gpt-4o-mini",
        "api_key_env": "OPENAI_API_KEY",
    },
    "deepseek": {
        "base_url": "https://api.deepseek.com/v1",
        "model": "deepseek-chat",
        "api_key_env": "DEEPSEEK_API_KEY",
    },
    "openrouter": {
        "base_url": "https://openrouter.ai/api/v1",
        "model": "openai/gpt-4o-mini",
        "api_key_env": "OPENROUTER_API_KEY",
    },
    "ollama": {
        "base_url": "http://127.0.0.1:11434/v1",
        "model": "qwen2.5:0.5b",
    },
    "local": {
        "serve": "smollm2",
        "model": "smollm2-135m-instruct",
        **LLAMA_SERVER,
    },
}


def interpolate(
    value: Any,
    env: Mapping[str, str],
    *,
    provider: str,
    key: str,
    path: str | None,
    line: int | None,
) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in strings (recursing into lists/tables)."""
    if isinstance(value, str):

        def missing(var: str) -> NoReturn:
            raise MissingEnvironmentVariable(
                var,
                f"environment variable {var} is not set (needed by LLM provider "
                f"{provider!r}); nothing was sent",
                path=path,
                line=line,
                key=key,
            )

        return expand(value, env, missing)
    if isinstance(value, list):
        return [
            interpolate(v, env, provider=provider, key=key, path=path, line=line) for v in value
        ]
    if isinstance(value, dict):
        return {
            k: interpolate(v, env, provider=provider, key=f"{key}.{k}", path=path, line=line)
            for k, v in value.items()
        }
    return value


def _line_of(project: Any, *keys: str) -> int | None:
    fn = getattr(project, "line_of", None)
    if callable(fn):
        try:
            line = fn(*keys)
        except Exception:  # a helper for messages must never hide the real error
            return None
        return line if isinstance(line, int) else None
    return None


def llm_tables(project: Any) -> dict[str, Any]:
    """The ``[llm.*]`` tables of a ProjectConfig-like object or a plain ``{"llm": ...}``."""
    if project is None:
        return {}
    if isinstance(project, Mapping):
        tables = project.get("llm", {})
    else:
        tables = getattr(project, "llm", None) or {}
    return dict(tables) if isinstance(tables, Mapping) else {}


def project_path(project: Any) -> Path | None:
    """Path of loom.toml, when the project object knows it."""
    p = project.get("path") if isinstance(project, Mapping) else getattr(project, "path", None)
    return Path(p) if p else None


def project_root(project: Any) -> Path | None:
    """Project directory (where ``.env`` and ``.loom/`` live), when known."""
    r = project.get("root") if isinstance(project, Mapping) else getattr(project, "root", None)
    if r:
        return Path(r)
    p = project_path(project)
    return p.parent if p is not None else None


def has_config(name: str, project: Any) -> bool:
    """Whether ``name`` is a loom.toml provider or a built-in preset."""
    return name in llm_tables(project) or name in PRESETS


def resolve_config(name: str, project: Any = None) -> LLMConfig:
    """Build the :class:`LLMConfig` for provider ``name``.

    Args:
        name: The ``<name>`` of ``[llm.<name>]``, or a preset name.
        project: A ``loom.config.ProjectConfig`` (anything with ``.llm``; optionally
            ``.path``, ``.root`` and ``line_of(*keys)``), a ``{"llm": {...}}`` dict, or None.

    Raises:
        ConfigError: Unknown provider, unset ``${VAR}`` or ``api_key_env``, or a bad
            value (the error names the key and, when known, the loom.toml line).
    """
    tables = llm_tables(project)
    path = project_path(project)
    spath = str(path) if path else None
    if name not in tables and name not in PRESETS:
        known = sorted(set(tables) | set(PRESETS))
        raise ConfigError(
            f"unknown LLM provider {name!r} (known: {', '.join(known)})",
            path=spath,
            key=f"llm.{name}",
        )
    table = tables.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"[llm.{name}] must be a table",
            path=spath,
            line=_line_of(project, "llm", name),
            key=f"llm.{name}",
        )
    env = environment(project_root(project))
    data: dict[str, Any] = dict(PRESETS.get(name, {}))
    if "base_url" in table or "api_base" in table:
        # A table pointing somewhere else must not inherit the preset's server or key.
        data.pop("serve", None)
        if "api_key" in table:
            data.pop("api_key_env", None)
    if "timeout_ms" in table or "timeout_sec" in table:
        data.pop("timeout", None)
    for key, value in table.items():
        data[key] = interpolate(
            value,
            env,
            provider=name,
            key=f"llm.{name}.{key}",
            path=spath,
            line=_line_of(project, "llm", name, key),
        )
    data["name"] = name
    try:
        config = LLMConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        key = loc[0] if loc else ""
        if key == "api_base":
            key = "base_url" if "base_url" in table else "api_base"
        dotted = ".".join([f"llm.{name}", *loc]) if loc else f"llm.{name}"
        msg = first.get("msg", "invalid value")
        if first.get("type") == "extra_forbidden":
            msg = f"unknown key {key!r}"
        else:
            msg = f"{key}: {msg}" if key else msg
        raise ConfigError(
            f"LLM provider {name!r}: {msg}",
            path=spath,
            line=_line_of(project, "llm", name, key) if key else None,
            key=dotted,
        ) from None
    if config.api_key_env:
        # Checked now, so an unset variable fails at startup, not mid-conversation.
        if not env.get(config.api_key_env) and config.api_key is None:
            raise MissingEnvironmentVariable(
                config.api_key_env,
                f"environment variable {config.api_key_env} is not set (the API key of LLM "
                f"provider {name!r}); nothing was sent",
                path=spath,
                line=_line_of(project, "llm", name, "api_key_env"),
                key=f"llm.{name}.api_key_env",
            )
        if config.api_key is None:
            config.api_key = SecretStr(env[config.api_key_env])
    if not config.base_url and not config.serve:
        raise ConfigError(
            f"LLM provider {name!r} needs base_url (or serve)",
            path=spath,
            line=_line_of(project, "llm", name),
            key=f"llm.{name}.base_url",
        )
    if not math.isfinite(config.timeout):
        raise ConfigError("timeout must be finite", path=spath, key=f"llm.{name}.timeout")
    return config


def validate_llm_tables(project: Any) -> list[ConfigError]:
    """Check every ``[llm.*]`` table without sending anything (for ``loom.config``).

    Unset environment variables are reported too, so ``loom check`` can list them.
    """
    problems: list[ConfigError] = []
    for name in llm_tables(project):
        try:
            resolve_config(name, project)
        except ConfigError as exc:
            problems.append(exc)
    return problems


__all__ = [
    "LLAMA_SERVER",
    "PRESETS",
    "LLMConfig",
    "Pricing",
    "environment",
    "merge_config",
    "read_dotenv",
    "resolve_config",
    "validate_llm_tables",
]

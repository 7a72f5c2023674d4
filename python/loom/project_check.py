"""Checks a whole project before anything of it starts.

``loom.toml`` is parsed into models when it is loaded (agent tables, ``[job]``,
``[runtime]``, the workspace layout); the tables owned by a subsystem are checked here,
before the first agent starts, so that a typo is ``exit 2`` with file, line and key
instead of a failure at the first call — or no failure at all:

* ``[llm.*]``: every table resolves (unknown keys, bad values); an agent's ``llm =``
  names a provider that exists. An unset API-key variable is an error for a provider an
  agent names, a warning for one that only ``"auto"`` or nobody uses.
* ``[bus]``: only known keys, ``nats`` a URL string.

The tool tables (``[workspace]``, ``[tools]``, ``[sandbox]``, ``[mcp.*]``) are checked by
building the tool registry, which :func:`loom.app.run_project` does up front too.
"""

from __future__ import annotations

import logging

from loom.config import ProjectConfig
from loom.errors import ConfigError, MissingEnvironmentVariable

log = logging.getLogger("loom.config")

#: Keys of ``[bus]``.


def check_project(project: ProjectConfig) -> None:
    """Raises the first problem of ``project`` as a :class:`ConfigError`; logs warnings.

    Raises:
        ConfigError: a bad ``[llm.*]``, ``[bus]``, ``[durability]`` or ``[dashboard]``
            value (keys, URLs, credentials, ``${VAR}``s, TLS files), an agent naming an unknown
            provider, or an unset API-key variable of a provider an agent names.
    """
    _check_bus(project)
    _check_llm(project)
    from loom.dashboard.settings import dashboard_settings
    from loom.durable.settings import durability_settings

    durability_settings(project)
    dashboard_settings(project)


def configures_tools(project: ProjectConfig) -> bool:
    """Whether the project has tool tables (then its registry is built up front)."""
    return any(k in project.raw for k in ("workspace", "tools", "sandbox", "mcp"))


def _check_bus(project: ProjectConfig) -> None:
    from loom.nats.settings import bus_settings

    bus_settings(project)


def _named_providers(project: ProjectConfig) -> dict[str, str]:
    """Provider names agents ask for explicitly (not ``"auto"``), with the agent."""
    named: dict[str, str] = {}
    for agent, spec in project.agents.items():
        llm = (spec.model_extra or {}).get("llm")
        if llm is None or llm == "auto":
            continue
        if not isinstance(llm, str) or not llm:
            raise project.error("must be a provider name or 'auto'", "agents", agent, "llm")
        named.setdefault(llm, agent)
    return named


def _check_llm(project: ProjectConfig) -> None:
    from loom.llm.config import resolve_config

    named = _named_providers(project)
    for name in sorted(set(project.llm) | set(named)):
        try:
            resolve_config(name, project)
        except MissingEnvironmentVariable as exc:
            if name in named:
                message = f"{exc.message} (agent {named[name]!r} uses it: llm = {name!r})"
                if name not in project.llm:  # a preset: point at the agent's choice
                    raise project.error(message, "agents", named[name], "llm") from None
                raise ConfigError(message, path=exc.path, line=exc.line, key=exc.key) from None
            log.warning("%s; an agent that asks for it will fail", exc)
        except ConfigError as exc:
            if name in named and name not in project.llm:
                raise project.error(exc.message, "agents", named[name], "llm") from None
            raise

"""``[telemetry]`` and the ``OTEL_*`` variables, resolved into :class:`TelemetrySettings`.

Only reads and checks: installing providers from the settings is
:mod:`loom.telemetry.setup`'s job. Environment variables win over loom.toml, so a
deployment can redirect telemetry without editing the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom._secrets import safe_repr
from loom.errors import ConfigError

if TYPE_CHECKING:
    from loom.config import ProjectConfig

#: Exporter names accepted in ``[telemetry] exporters``.
EXPORTERS = ("otlp-grpc", "otlp-http", "file", "console", "none")

#: Keys of ``[telemetry]``.
KEYS = frozenset(
    {
        "enabled",
        "exporters",
        "endpoint",
        "traces_endpoint",
        "protocol",
        "headers",
        "insecure",
        "timeout",
        "service_name",
        "resource",
        "sampling_ratio",
        "capture_content",
        "bus_spans",
        "trace_dir",
        "metrics",
        "metrics_interval",
    }
)

#: ``bus_spans`` levels: which spans the bus makes (see docs/observability.md).
BUS_SPANS = ("all", "requests", "none")

#: Where ``file`` writes, relative to the project root.
DEFAULT_TRACE_DIR = ".loom/traces"

_SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
_PROTOCOLS = {"grpc": "grpc", "http/protobuf": "http", "http": "http"}


@dataclass(frozen=True, repr=False)
class TelemetrySettings:
    """``[telemetry]`` merged with the environment (see ``docs/observability.md``).

    ``repr``/``str`` mask header values and endpoint credentials (:mod:`loom._secrets`).
    """

    enabled: bool = True
    exporters: tuple[str, ...] = ("file",)
    endpoint: str | None = None
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    protocol: str = "http"  # "http" (http/protobuf) or "grpc"
    headers: Mapping[str, str] = field(default_factory=dict)
    insecure: bool | None = None
    timeout: float | None = None
    resource: Mapping[str, Any] = field(default_factory=dict)
    sampler: str = "parentbased_always_on"
    sampling_ratio: float = 1.0
    capture_content: bool | None = None
    bus_spans: str = "all"
    trace_dir: Path = Path(DEFAULT_TRACE_DIR)
    metrics: bool = True
    metrics_interval: float | None = None

    @property
    def service_name(self) -> str:
        return str(self.resource.get("service.name", "loom"))

    def __repr__(self) -> str:
        return safe_repr(self)


class _Where:
    """Builds ConfigErrors that point into loom.toml when there is one."""

    def __init__(self, project: ProjectConfig | None) -> None:
        self.project = project

    def error(self, message: str, key: str | None = None) -> ConfigError:
        keys = ("telemetry", key) if key else ("telemetry",)
        if self.project is not None:
            return self.project.error(message, *keys)
        return ConfigError(message, key=".".join(keys))


def _env_error(var: str, message: str) -> ConfigError:
    return ConfigError(f"environment variable {var}: {message}")


def _split(project_or_dict: Any) -> tuple[ProjectConfig | None, dict[str, Any], str, Path]:
    """(project, telemetry table, default service name, project root)."""
    if project_or_dict is None:
        return None, {}, "loom", Path.cwd()
    if isinstance(project_or_dict, Mapping):
        table = project_or_dict.get("telemetry", project_or_dict)
        if not isinstance(table, Mapping):
            raise ConfigError("[telemetry] must be a table", key="telemetry")
        return None, dict(table), "loom", Path.cwd()
    project: ProjectConfig = project_or_dict
    return project, dict(project.telemetry), project.project.name, project.root


def resolve_settings(
    project_or_dict: Any = None, env: Mapping[str, str] | None = None
) -> TelemetrySettings:
    """Validates ``[telemetry]`` and merges the ``OTEL_*`` variables over it.

    Raises:
        ConfigError: an unknown key or exporter, a value of the wrong type, or a bad
            environment variable (the message names the key, file and line, or the
            variable).
    """
    env = os.environ if env is None else env
    project, table, default_name, root = _split(project_or_dict)
    where = _Where(project)
    for key in table:
        if key not in KEYS:
            raise where.error(
                f"unknown key {key!r} in [telemetry]; expected one of {', '.join(sorted(KEYS))}",
                key,
            )

    def typed(key: str, kinds: type | tuple[type, ...], what: str) -> Any:
        v = table.get(key)
        if v is None:
            return None
        if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in _tuple(kinds)):
            raise where.error(f"{key} must be {what} (got {v!r})", key)
        return v

    enabled = typed("enabled", bool, "true or false")
    enabled = True if enabled is None else enabled
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        enabled = False

    # -- where spans go -------------------------------------------------------------
    protocol_raw = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or typed("protocol", str, '"grpc" or "http/protobuf"')
    )
    protocol: str | None = None
    if protocol_raw:
        protocol = _PROTOCOLS.get(protocol_raw.strip().lower())
        if protocol is None:
            msg = f"unsupported OTLP protocol {protocol_raw!r}; use grpc or http/protobuf"
            if table.get("protocol") == protocol_raw:
                raise where.error(msg, "protocol")
            raise _env_error("OTEL_EXPORTER_OTLP_PROTOCOL", msg)

    env_exporters = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if env_exporters:
        names = []
        for n in (x.strip().lower() for x in env_exporters.split(",")):
            if n == "otlp":
                n = f"otlp-{protocol or 'http'}"
            if n not in EXPORTERS:
                raise _env_error(
                    "OTEL_TRACES_EXPORTER",
                    f"unknown exporter {n!r}; expected otlp or one of {', '.join(EXPORTERS)}",
                )
            names.append(n)
    else:
        raw = table.get("exporters", ["file"])
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise where.error(
                f"exporters must be a list of names from {', '.join(EXPORTERS)} (got {raw!r})",
                "exporters",
            )
        names = []
        for n in raw:
            if n not in EXPORTERS:
                raise where.error(
                    f"unknown exporter {n!r}; expected one of {', '.join(EXPORTERS)}",
                    "exporters",
                )
            names.append(n)
    names = list(dict.fromkeys(names))
    if "none" in names and len(names) > 1:
        raise where.error('"none" cannot be combined with other exporters', "exporters")

    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or typed("endpoint", str, "a URL")
    traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or typed(
        "traces_endpoint", str, "a URL"
    )
    metrics_endpoint = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if protocol is None:
        protocol = "grpc" if "otlp-grpc" in names and "otlp-http" not in names else "http"
    if (endpoint or traces_endpoint) and names != ["none"]:
        if not any(n.startswith("otlp-") for n in names):
            # "when an OTLP endpoint is configured, spans go there too"
            names.append(f"otlp-{protocol}")
    if names == ["none"]:
        enabled = False

    headers = typed("headers", dict, "a table of strings") or {}
    if not all(isinstance(v, str) for v in headers.values()):
        raise where.error("headers must be a table of strings", "headers")
    insecure = typed("insecure", bool, "true or false")
    env_insecure = env.get("OTEL_EXPORTER_OTLP_INSECURE")
    if env_insecure:
        insecure = env_insecure.strip().lower() == "true"
    timeout = typed("timeout", (int, float), "a number of seconds")
    if timeout is not None and timeout <= 0:
        raise where.error(f"timeout must be positive (got {timeout!r})", "timeout")

    # -- resource ---------------------------------------------------------------------
    resource = dict(typed("resource", dict, "a table") or {})
    name = typed("service_name", str, "a string")
    resource["service.name"] = name or resource.get("service.name") or default_name
    from opentelemetry.sdk.resources import OTELResourceDetector

    resource.update(_detect_env_resource(OTELResourceDetector, env))

    # -- sampling ---------------------------------------------------------------------
    ratio = typed("sampling_ratio", (int, float), "a number between 0 and 1")
    if ratio is not None and not 0.0 <= ratio <= 1.0:
        raise where.error(
            f"sampling_ratio must be between 0 and 1 (got {ratio!r})", "sampling_ratio"
        )
    sampler = (
        "parentbased_always_on" if ratio is None or ratio >= 1.0 else "parentbased_traceidratio"
    )
    ratio = 1.0 if ratio is None else float(ratio)
    env_sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if env_sampler:
        if env_sampler not in _SAMPLERS:
            raise _env_error(
                "OTEL_TRACES_SAMPLER",
                f"unsupported sampler {env_sampler!r}; "
                f"expected one of {', '.join(sorted(_SAMPLERS))}",
            )
        sampler = env_sampler
        arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        if arg and "ratio" in sampler:
            try:
                ratio = float(arg)
            except ValueError:
                raise _env_error("OTEL_TRACES_SAMPLER_ARG", f"not a number: {arg!r}") from None
            if not 0.0 <= ratio <= 1.0:
                raise _env_error("OTEL_TRACES_SAMPLER_ARG", f"must be between 0 and 1: {arg!r}")

    # -- the rest ---------------------------------------------------------------------
    capture = typed("capture_content", bool, "true or false")
    bus_spans = typed("bus_spans", str, 'one of "all", "requests", "none"')
    if bus_spans is not None and bus_spans not in BUS_SPANS:
        raise where.error(
            f'bus_spans must be one of "all", "requests", "none" (got {bus_spans!r})',
            "bus_spans",
        )
    trace_dir = Path(typed("trace_dir", str, "a directory path") or DEFAULT_TRACE_DIR)
    if not trace_dir.is_absolute():
        trace_dir = root / trace_dir
    metrics_on = typed("metrics", bool, "true or false")
    interval = typed("metrics_interval", (int, float), "a number of seconds")
    if interval is not None and interval <= 0:
        raise where.error(
            f"metrics_interval must be positive (got {interval!r})", "metrics_interval"
        )

    return TelemetrySettings(
        enabled=enabled,
        exporters=tuple(names),
        endpoint=endpoint,
        traces_endpoint=traces_endpoint,
        metrics_endpoint=metrics_endpoint,
        protocol=protocol,
        headers=dict(headers),
        insecure=insecure,
        timeout=float(timeout) if timeout is not None else None,
        resource=resource,
        sampler=sampler,
        sampling_ratio=ratio,
        capture_content=capture,
        bus_spans=bus_spans or "all",
        trace_dir=trace_dir,
        metrics=True if metrics_on is None else metrics_on,
        metrics_interval=float(interval) if interval is not None else None,
    )


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _detect_env_resource(detector: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` (the SDK's parser reads
    ``os.environ``; a test may pass another mapping, parsed the same way here)."""
    if env is os.environ:
        return dict(detector().detect().attributes)
    from urllib.parse import unquote

    out: dict[str, Any] = {}
    for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = unquote(value.strip())
    if env.get("OTEL_SERVICE_NAME"):
        out["service.name"] = env["OTEL_SERVICE_NAME"]
    return out


__all__ = [
    "DEFAULT_TRACE_DIR",
    "EXPORTERS",
    "KEYS",
    "TelemetrySettings",
    "resolve_settings",
]

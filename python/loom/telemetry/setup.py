"""Installing OpenTelemetry providers from ``[telemetry]`` and the ``OTEL_*`` variables.

Library code never calls this: ``loom run`` does (through :func:`loom.app.run_project`),
and so may an application that runs agents itself::

    handle = loom.telemetry.setup(project)   # or a dict: {"exporters": ["otlp-http"]}
    try:
        ...
    finally:
        handle.shutdown()                       # flushes every exporter

Environment variables win over loom.toml, so a deployment can redirect telemetry
without editing the file. The OpenTelemetry SDK is imported when ``setup()`` runs, not
with ``loom``.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom._secrets import safe_repr
from loom.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

    from loom.config import ProjectConfig
    from loom.runtime import Runtime

log = logging.getLogger("loom.telemetry")

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
        "trace_dir",
        "metrics",
        "metrics_interval",
    }
)

#: Span queue of the ``file`` exporter's batch processor (``OTEL_BSP_MAX_QUEUE_SIZE``
#: overrides it).
FILE_QUEUE_SIZE = 32768

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
_TRUE = {"1", "true", "yes", "on"}


def new_run_id() -> str:
    """A run id that sorts by start time: ``20260314T091502Z-3f9a1c``."""
    import datetime as _dt
    import secrets

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


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


def _sampler(settings: TelemetrySettings) -> Sampler:
    from opentelemetry.sdk.trace import sampling

    name, ratio = settings.sampler, settings.sampling_ratio
    root: Sampler
    if name.endswith("always_on"):
        root = sampling.ALWAYS_ON
    elif name.endswith("always_off"):
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased") else root


# -- the handle -------------------------------------------------------------------------


class TelemetryHandle:
    """What :func:`setup` installed. :meth:`shutdown` flushes every exporter and puts
    the previous global providers back; it is idempotent and also runs at interpreter
    exit (after Ctrl-C too), so spans are not lost when the process ends."""

    def __init__(
        self,
        settings: TelemetrySettings,
        run_id: str,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        trace_file: Path | None = None,
        metrics_file: Path | None = None,
    ) -> None:
        #: The merged settings.
        self.settings = settings
        #: The id of this run (names the trace file).
        self.run_id = run_id
        #: The installed SDK providers (None when telemetry is disabled).
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        #: The OTLP/JSON lines file spans are written to (``file`` exporter), if any.
        self.trace_file = trace_file
        #: Where metrics are written (``file`` exporter), if any.
        self.metrics_file = metrics_file
        self._saved: tuple[Any, ...] | None = None
        self._saved_capture: tuple[bool, bool | None] | None = None
        self._closed = False

    @property
    def enabled(self) -> bool:
        """Whether a tracer provider was installed."""
        return self.tracer_provider is not None

    def observe_bus(self, runtime: Runtime) -> None:
        """Reports ``runtime``'s bus counters (published, delivered, dropped, queue
        depth) as metrics."""
        if self.meter_provider is not None:
            from loom.telemetry.metrics import observe_bus

            observe_bus(runtime, self.meter_provider)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Exports everything buffered so far; False if an exporter did not finish."""
        ok = True
        if self.tracer_provider is not None:
            ok = self.tracer_provider.force_flush(timeout_millis) and ok
        if self.meter_provider is not None:
            ok = self.meter_provider.force_flush(timeout_millis) and ok
        return ok

    def shutdown(self) -> None:
        """Flushes and closes the exporters, and uninstalls the providers."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.shutdown)
        try:
            if self.meter_provider is not None:
                try:
                    self.meter_provider.shutdown()
                except Exception:
                    log.warning("metrics shutdown failed", exc_info=True)
            if self.tracer_provider is not None:
                self.tracer_provider.shutdown()
        finally:
            _restore(self)

    def __enter__(self) -> TelemetryHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        where = f", trace_file={str(self.trace_file)!r}" if self.trace_file else ""
        return (
            f"TelemetryHandle(run_id={self.run_id!r}, exporters={list(self.settings.exporters)!r}"
            f"{where})"
        )


def setup(project_or_dict: Any = None, *, run_id: str | None = None) -> TelemetryHandle:
    """Installs global tracer and meter providers as ``[telemetry]`` and the ``OTEL_*``
    variables say: exporters ``otlp-grpc``, ``otlp-http``, ``file``, ``console``,
    ``none`` (several allowed; ``file`` by default, writing
    ``<project>/.loom/traces/<run-id>.jsonl``), service name and resource attributes,
    a parent-based sampling ratio, content capture. Spans go through one
    ``BatchSpanProcessor`` per exporter.

    Args:
        project_or_dict: A :class:`~loom.config.ProjectConfig`, the ``[telemetry]``
            table as a dict (or a dict with a ``"telemetry"`` key), or None (defaults
            and environment only).
        run_id: Names the trace file and becomes ``service.instance.id`` (default: a
            new time-ordered id).

    Returns:
        The handle; call :meth:`TelemetryHandle.shutdown` when done (it also runs at
        exit).

    Raises:
        ConfigError: invalid settings (the message names the key and line).
    """
    settings = resolve_settings(project_or_dict)
    run_id = run_id or new_run_id()
    if not settings.enabled:
        log.debug("telemetry disabled")
        return TelemetryHandle(settings, run_id)

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from loom import __version__
    from loom.telemetry import exporters as _exp

    attrs = {"service.instance.id": run_id, "loom.version": __version__}
    attrs.update(settings.resource)
    resource = Resource.create(attrs)
    trace_file = settings.trace_dir / f"{run_id}.jsonl"
    metrics_file = settings.trace_dir / f"{run_id}.metrics.jsonl"

    tracer_provider = TracerProvider(
        resource=resource, sampler=_sampler(settings), shutdown_on_exit=False
    )
    for name in settings.exporters:
        exporter = _exp.span_exporter(name, settings, trace_file)
        queue = None
        if name == "file" and not os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE"):
            # The SDK's 2048 overflows (and drops spans) when a busy run ends thousands
            # of spans per second while the loop starves the export thread; a local
            # file can take a deeper queue.
            queue = FILE_QUEUE_SIZE
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue))

    meter_provider = None
    if settings.metrics:
        meter_provider = _meter_provider(settings, resource, metrics_file)
        if meter_provider is not None:
            from loom.telemetry.metrics import ChatSpanMetrics

            tracer_provider.add_span_processor(ChatSpanMetrics(meter_provider))

    handle = TelemetryHandle(
        settings,
        run_id,
        tracer_provider,
        meter_provider,
        trace_file if "file" in settings.exporters else None,
        metrics_file if "file" in settings.exporters and meter_provider is not None else None,
    )
    _install(handle)
    atexit.register(handle.shutdown)
    log.debug("telemetry: %r", handle)
    return handle


def _meter_provider(
    settings: TelemetrySettings, resource: Any, metrics_file: Path
) -> MeterProvider | None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from loom.telemetry import exporters as _exp

    interval = settings.metrics_interval * 1000 if settings.metrics_interval else None
    readers = []
    for name in settings.exporters:
        exporter = _exp.metric_exporter(name, settings, metrics_file)
        if exporter is not None:
            readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=interval))
    if not readers:
        return None
    return MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)


# -- swapping the global providers ------------------------------------------------------
# The OpenTelemetry API lets a provider be set once per process. Loom installs one per
# run (``loom run`` in-process, tests, notebooks), so it resets that latch and puts the
# previous provider back on shutdown: the same thing the SDK's own test utilities do.


def _install(handle: TelemetryHandle) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    from loom.telemetry import (
        _capture_content,
        refresh_tracing_active,
        set_capture_content,
    )

    handle._saved = (
        trace._TRACER_PROVIDER,
        trace._TRACER_PROVIDER_SET_ONCE,
        metrics_internal._METER_PROVIDER,
        metrics_internal._METER_PROVIDER_SET_ONCE,
    )
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(handle.tracer_provider)  # type: ignore[arg-type]
    if handle.meter_provider is not None:
        metrics_internal._METER_PROVIDER_SET_ONCE = Once()
        metrics.set_meter_provider(handle.meter_provider)
    refresh_tracing_active()
    capture = handle.settings.capture_content
    if (
        capture is not None
        and not os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip()
    ):
        handle._saved_capture = (True, _capture_content)
        set_capture_content(capture)


def _restore(handle: TelemetryHandle) -> None:
    from opentelemetry import trace
    from opentelemetry.metrics import _internal as metrics_internal

    from loom.telemetry import refresh_tracing_active, set_capture_content

    if handle._saved is not None:
        tp, tp_once, mp, mp_once = handle._saved
        # Only if nobody installed another provider over ours in the meantime.
        if trace._TRACER_PROVIDER is handle.tracer_provider:
            trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = tp, tp_once
        if (
            handle.meter_provider is not None
            and metrics_internal._METER_PROVIDER is handle.meter_provider
        ):
            metrics_internal._METER_PROVIDER = mp
            metrics_internal._METER_PROVIDER_SET_ONCE = mp_once
        handle._saved = None
    if handle._saved_capture is not None:
        set_capture_content(handle._saved_capture[1])
        handle._saved_capture = None
    refresh_tracing_active()


__all__ = [
    "DEFAULT_TRACE_DIR",
    "EXPORTERS",
    "TelemetryHandle",
    "TelemetrySettings",
    "new_run_id",
    "resolve_settings",
    "setup",
]

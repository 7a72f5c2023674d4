"""Installing OpenTelemetry providers from ``[telemetry]`` and the ``OTEL_*`` variables.

Library code never calls this: ``loom run`` does (through :func:`loom.app.run_project`),
and so may an application that runs agents itself::

    handle = loom.telemetry.setup(project)   # or a dict: {"exporters": ["otlp-http"]}
    try:
        ...
    finally:
        handle.shutdown()                       # flushes every exporter

The settings come from :mod:`loom.telemetry.settings`; how a run's providers are
installed and removed again (with OpenTelemetry's public API only) is
:mod:`loom.telemetry.providers`'s. The OpenTelemetry SDK is imported when ``setup()``
runs, not with ``loom``.
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom._version import __version__
from loom.telemetry.settings import (
    DEFAULT_TRACE_DIR,
    EXPORTERS,
    TelemetrySettings,
    resolve_settings,
)
from loom.telemetry.state import (
    CAPTURE_ENV,
    bus_spans,
    capture_setting,
    set_bus_spans,
    set_capture_content,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

    from loom.telemetry.metrics import BusHost
    from loom.telemetry.providers import Installed

log = logging.getLogger("loom.telemetry")

#: Span queue of the ``file`` exporter (``OTEL_BSP_MAX_QUEUE_SIZE`` overrides it).
FILE_QUEUE_SIZE = 32768


def new_run_id() -> str:
    """A run id that sorts by start time: ``20260314T091502Z-3f9a1c``."""
    import datetime as _dt
    import secrets

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


class TelemetryHandle:
    """What :func:`setup` installed. :meth:`shutdown` flushes every exporter and
    uninstalls the providers (what was installed before is current again); it is
    idempotent and also runs at interpreter exit (after Ctrl-C too), so spans are not
    lost when the process ends."""

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
        self._installed: Installed | None = None
        self._saved_capture: tuple[bool | None] | None = None
        self._saved_bus_spans: str | None = None
        self._closed = False

    @property
    def enabled(self) -> bool:
        """Whether a tracer provider was installed."""
        return self.tracer_provider is not None

    def observe_bus(self, host: BusHost) -> None:
        """Reports the bus counters of ``host`` (a ``Runtime``: published, delivered,
        dropped, queue depth) as metrics."""
        if self.meter_provider is not None:
            from loom.telemetry.metrics import observe_bus

            observe_bus(host, self.meter_provider)

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
            self._uninstall()

    def _install(self) -> None:
        from loom.telemetry.providers import install

        self._installed = install(self.tracer_provider, self.meter_provider)
        capture = self.settings.capture_content
        if capture is not None and not os.environ.get(CAPTURE_ENV, "").strip():
            self._saved_capture = (capture_setting(),)
            set_capture_content(capture)
        self._saved_bus_spans = bus_spans()
        set_bus_spans(self.settings.bus_spans)

    def _uninstall(self) -> None:
        if self._saved_bus_spans is not None:
            set_bus_spans(self._saved_bus_spans)
            self._saved_bus_spans = None
        if self._saved_capture is not None:
            set_capture_content(self._saved_capture[0])
            self._saved_capture = None
        if self._installed is not None:
            from loom.telemetry.providers import uninstall

            uninstall(self._installed)
            self._installed = None

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
    """Installs tracer and meter providers for a run as ``[telemetry]`` and the
    ``OTEL_*`` variables say: exporters ``otlp-grpc``, ``otlp-http``, ``file``,
    ``console``, ``none`` (several allowed; ``file`` by default, writing
    ``<project>/.loom/traces/<run-id>.jsonl``), service name and resource attributes,
    a parent-based sampling ratio, content capture. Spans go through one
    ``BatchSpanProcessor`` per exporter, except ``file``'s, whose queue, encoder and
    writer are Rust's (:mod:`loom.telemetry.native_export`). Tracers of OpenTelemetry's
    global provider record into the run too (:mod:`loom.telemetry.providers`).

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
        if name == "file":
            from loom.telemetry.native_export import NativeFileSpanProcessor

            # Encoded and written by a Rust thread, off the GIL (native_export's
            # docstring). The SDK's 2048-span queue overflowed (and dropped spans) when a
            # busy run ended thousands of spans per second; a local file can take a
            # deeper queue.
            queue = None if os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") else FILE_QUEUE_SIZE
            tracer_provider.add_span_processor(
                NativeFileSpanProcessor(trace_file, max_queue_size=queue)
            )
            continue
        exporter = _exp.span_exporter(name, settings, trace_file)
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))

    meter_provider = None
    if settings.metrics:
        meter_provider = _meter_provider(settings, resource, metrics_file)

    handle = TelemetryHandle(
        settings,
        run_id,
        tracer_provider,
        meter_provider,
        trace_file if "file" in settings.exporters else None,
        metrics_file if "file" in settings.exporters and meter_provider is not None else None,
    )
    handle._install()
    atexit.register(handle.shutdown)
    log.debug("telemetry: %r", handle)
    return handle


def init_telemetry(
    service_name: str | None = None, otlp_endpoint: str | None = None, **settings: Any
) -> TelemetryHandle:
    """The original Loom's ``init_telemetry``: :func:`setup` for the whole process,
    undone by :func:`shutdown_telemetry`.

    Args:
        service_name: ``service.name`` of the spans (``OTEL_SERVICE_NAME`` wins, as
            everywhere in Loom).
        otlp_endpoint: Export spans there over OTLP/gRPC, as the original did
            (``protocol="http/protobuf"`` for OTLP/HTTP); only there, unless
            ``exporters`` says otherwise. Without it, Loom's defaults apply: the
            ``OTEL_EXPORTER_OTLP_*`` variables, else the ``file`` exporter
            (``.loom/traces``) — not a collector on localhost:4317 that may not exist.
        **settings: Further ``[telemetry]`` keys (``exporters``, ``headers``,
            ``capture_content``, ...).

    Returns:
        The handle (:func:`shutdown_telemetry` shuts it down). A second call returns
        the first call's handle. Under ``loom run``, which has set telemetry up from
        ``[telemetry]`` already, nothing is installed (a disabled handle is returned,
        and the reason logged): the run's settings are the one place to configure it.

    Raises:
        ConfigError: invalid settings.
    """
    from loom.telemetry.state import _process

    if _process.init_handle is not None and not _process.init_handle._closed:
        log.info("init_telemetry: already initialised; shutdown_telemetry() first to change it")
        handle: TelemetryHandle = _process.init_handle
        return handle
    table: dict[str, Any] = dict(settings)
    if service_name is not None:
        table["service_name"] = service_name
    if otlp_endpoint is not None:
        table["endpoint"] = otlp_endpoint
        table.setdefault("protocol", "grpc")
        table.setdefault("exporters", [])  # the endpoint's OTLP exporter is added
    if _process.tracer_provider is not None:
        log.info(
            "init_telemetry: telemetry is already set up for this run (loom run, from "
            "[telemetry] in loom.toml); leaving it as it is — set [telemetry] endpoint "
            "there to export to a collector as well"
        )
        return TelemetryHandle(resolve_settings({**table, "enabled": False}), new_run_id())
    handle = setup(table)
    _process.init_handle = handle
    return handle


def shutdown_telemetry() -> None:
    """The original Loom's ``shutdown_telemetry``: flushes and removes what
    :func:`init_telemetry` installed (nothing if it installed nothing)."""
    from loom.telemetry.state import _process

    handle, _process.init_handle = _process.init_handle, None
    if handle is not None:
        handle.shutdown()


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


def _meter_provider(
    settings: TelemetrySettings, resource: Resource, metrics_file: Path
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


__all__ = [
    "DEFAULT_TRACE_DIR",
    "EXPORTERS",
    "FILE_QUEUE_SIZE",
    "TelemetryHandle",
    "TelemetrySettings",
    "init_telemetry",
    "new_run_id",
    "resolve_settings",
    "setup",
    "shutdown_telemetry",
]

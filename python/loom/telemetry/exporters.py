"""Exporters: the OTLP/JSON lines file of every ``loom run``, and the factory that turns
``[telemetry] exporters`` into SDK exporters (the OTLP ones are imported only when used,
so ``import loom`` does not pay for protobuf and gRPC)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from loom.telemetry.otlp_json import request_json

if TYPE_CHECKING:
    from loom.telemetry.settings import TelemetrySettings

log = logging.getLogger("loom.telemetry")


class _LineFile:
    """An append-only file of JSON lines, opened on first write, flushed per line (a
    killed process loses at most the batch being written)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: Any = None
        self.closed = False

    def write(self, line: str) -> bool:
        with self._lock:
            if self.closed:
                return False
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # A lone surrogate (model text can hold one) cannot be encoded; it is
                # always inside a JSON string here, where "\udXXX" is its valid escape —
                # without this the whole batch was lost.
                self._fh = open(self.path, "a", encoding="utf-8", errors="backslashreplace")
            self._fh.write(line + "\n")
            self._fh.flush()
            return True

    def close(self) -> None:
        with self._lock:
            self.closed = True
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class OtlpJsonFileExporter(SpanExporter):
    """Writes each batch of spans as one OTLP/JSON ``ExportTraceServiceRequest`` line.

    The file is what the OpenTelemetry Collector's ``otlpjsonfile`` receiver reads and
    what ``loom trace`` shows; see ``docs/observability.md``.

    Args:
        path: The ``.jsonl`` file (created with its directory on the first batch).
    """

    def __init__(self, path: str | Path) -> None:
        self._file = _LineFile(Path(path))
        #: Spans written so far (the benchmark checks nothing was dropped).
        self.exported = 0

    @property
    def path(self) -> Path:
        """The file written to."""
        return self._file.path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            line = request_json(spans)
            if not self._file.write(line):
                return SpanExportResult.FAILURE
        except (OSError, ValueError, TypeError) as exc:
            log.warning("cannot write spans to %s: %s", self.path, exc)
            return SpanExportResult.FAILURE
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every batch is flushed when written

    def shutdown(self) -> None:
        self._file.close()


class OtlpJsonFileMetricExporter(MetricExporter):
    """Writes each metrics collection as one OTLP/JSON ``ExportMetricsServiceRequest``
    line (cumulative temporality), next to the trace file."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(preferred_temporality=None, preferred_aggregation=None)
        self._file = _LineFile(Path(path))

    @property
    def path(self) -> Path:
        """The file written to."""
        return self._file.path

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        from google.protobuf.json_format import (  # type: ignore[import-untyped,unused-ignore]
            MessageToDict,
        )
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        try:
            data = MessageToDict(encode_metrics(metrics_data), use_integers_for_enums=True)
            _hex_ids(data)
            if not data.get("resourceMetrics"):
                return MetricExportResult.SUCCESS
            self._file.write(json.dumps(data, separators=(",", ":"), ensure_ascii=False))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("cannot write metrics to %s: %s", self.path, exc)
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._file.close()


def _hex_ids(node: Any) -> None:
    """Protobuf-JSON writes bytes as base64; OTLP/JSON wants trace/span ids in hex
    (exemplars carry them in metrics)."""
    import base64

    if isinstance(node, dict):
        for key in ("traceId", "spanId"):
            if isinstance(node.get(key), str):
                node[key] = base64.b64decode(node[key]).hex()
        for v in node.values():
            _hex_ids(v)
    elif isinstance(node, list):
        for v in node:
            _hex_ids(v)


# -- the factory ------------------------------------------------------------------------


def _http_url(base: str, signal: str) -> str:
    return base.rstrip("/") + f"/v1/{signal}"


def span_exporter(name: str, settings: TelemetrySettings, trace_file: Path) -> SpanExporter:
    """The span exporter called ``name`` (one of :data:`loom.telemetry.setup.EXPORTERS`,
    except ``none``)."""
    if name == "file":
        return OtlpJsonFileExporter(trace_file)
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # stderr: stdout carries the job's reply in `loom run`.
        return ConsoleSpanExporter(out=sys.stderr)
    headers = dict(settings.headers) or None
    if name == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        url = settings.traces_endpoint or _http_url(
            settings.endpoint or "http://localhost:4318", "traces"
        )
        return HttpSpanExporter(endpoint=url, headers=headers, timeout=settings.timeout)
    if name == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        url = settings.traces_endpoint or settings.endpoint or "http://localhost:4317"
        return GrpcSpanExporter(
            endpoint=url,
            insecure=_insecure(url, settings.insecure),
            headers=headers,
            timeout=settings.timeout,
        )
    raise ValueError(f"unknown exporter {name!r}")


def metric_exporter(
    name: str, settings: TelemetrySettings, metrics_file: Path
) -> MetricExporter | None:
    """The metric exporter matching span exporter ``name`` (None: that exporter has no
    metrics counterpart)."""
    if name == "file":
        return OtlpJsonFileMetricExporter(metrics_file)
    if name == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter(out=sys.stderr)
    headers = dict(settings.headers) or None
    if name == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )

        url = settings.metrics_endpoint or _http_url(
            settings.endpoint or "http://localhost:4318", "metrics"
        )
        return HttpMetricExporter(endpoint=url, headers=headers, timeout=settings.timeout)
    if name == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        url = settings.metrics_endpoint or settings.endpoint or "http://localhost:4317"
        return GrpcMetricExporter(
            endpoint=url,
            insecure=_insecure(url, settings.insecure),
            headers=headers,
            timeout=settings.timeout,
        )
    return None


def _insecure(url: str, configured: bool | None) -> bool:
    if configured is not None:
        return configured
    # A scheme-less "host:4317" is plaintext unless told otherwise (what a local
    # collector or Jaeger listens with); "https://" always means TLS.
    return not url.startswith("https://")


__all__ = [
    "OtlpJsonFileExporter",
    "OtlpJsonFileMetricExporter",
    "metric_exporter",
    "span_exporter",
]

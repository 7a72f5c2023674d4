"""Fixtures of the telemetry tests: real OTLP receivers on 127.0.0.1, and a guard that
no test leaves a tracer provider or content capture behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from otlp_receivers import GrpcReceiver, HttpReceiver

from loom.telemetry import refresh_tracing_active, set_capture_content


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    r = HttpReceiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    r = GrpcReceiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(autouse=True)
def _no_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    ):
        monkeypatch.delenv(var, raising=False)
    before = trace._TRACER_PROVIDER
    yield
    set_capture_content(None)
    # Loom's global switch stays installed (it records nothing between runs).
    leaked = refresh_tracing_active()
    if leaked:
        trace._TRACER_PROVIDER = before
        refresh_tracing_active()
    assert not leaked, "a test left its tracer provider installed (missing shutdown())"

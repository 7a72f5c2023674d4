"""Shared fixtures: a fresh runtime per test (and no leaks into the next one)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom import Runtime


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = Runtime()
    Runtime.set_default(rt)
    try:
        yield rt
    finally:
        await rt.stop(timeout=5)
        Runtime.set_default(None)


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """Installs a real SDK tracer provider with an in-memory exporter for one test,
    then removes it again (so other tests run untraced, on the fast paths)."""
    from opentelemetry.util._once import Once

    from loom.telemetry import refresh_tracing_active

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    assert refresh_tracing_active()
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
        refresh_tracing_active()


# Tests choose their project explicitly (Runtime(project) or LOOM_PROJECT in a
# subprocess); the default runtime of in-process tests must not pick up the repository's
# own loom.toml from the current directory.
os.environ.setdefault("LOOM_PROJECT", "none")

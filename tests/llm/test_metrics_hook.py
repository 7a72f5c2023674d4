"""The LLM client records the GenAI client metrics itself, for every call — also when
no span is recorded (no tracer provider, or the span was not sampled)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.util._once import Once

from conftest import respond
from loom.llm import RateLimitError

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    saved = (metrics._internal._METER_PROVIDER, metrics._internal._METER_PROVIDER_SET_ONCE)
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()
    metrics.set_meter_provider(provider)
    try:
        yield reader
    finally:
        provider.shutdown()
        metrics._internal._METER_PROVIDER, metrics._internal._METER_PROVIDER_SET_ONCE = saved


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [
        p
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]


async def test_calls_and_errors_are_measured(fault_server, make_provider, reader) -> None:  # type: ignore[no-untyped-def]
    llm = make_provider(name="metered", max_retries=0)
    await llm.call(MSG)
    durations = points(reader, "gen_ai.client.operation.duration")
    assert len(durations) == 1 and durations[0].count == 1
    attrs = dict(durations[0].attributes)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "fake-model"
    assert attrs["server.address"] == "127.0.0.1"
    tokens = points(reader, "gen_ai.client.token.usage")
    assert {dict(p.attributes)["gen_ai.token.type"] for p in tokens} == {"input", "output"}

    fault_server.push(respond(status=429, body={"error": {"message": "slow down"}}))
    with pytest.raises(RateLimitError):
        await llm.call(MSG)
    errors = [
        p
        for p in points(reader, "gen_ai.client.operation.duration")
        if "error.type" in p.attributes
    ]
    assert len(errors) == 1 and dict(errors[0].attributes)["error.type"] == "429"

"""The original Loom's ``init_telemetry`` / ``shutdown_telemetry`` (``from loom import
...``): real export to OTLP receivers on 127.0.0.1, the file default without an
endpoint, idempotence, and leaving ``loom run``'s telemetry alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from otlp_receivers import GrpcReceiver, HttpReceiver

from loom import Agent, Runtime, init_telemetry, shutdown_telemetry
from loom.cognitive import CognitiveAgent
from loom.llm import LLMResponse
from loom.telemetry import setup, tracing_active


class MockLLM:
    async def call(self, messages: Any, **kwargs: Any) -> LLMResponse:
        return LLMResponse(content="Mock response", finish_reason="stop")


async def traced_run() -> None:
    """A cognitive run and a span of the user's own, as the original's code made them."""
    rt = Runtime()
    try:
        async with Agent("researcher", runtime=rt) as agent:
            result = await CognitiveAgent(ctx=agent.ctx, llm=MockLLM(), tools=[]).run("go")
            assert result.success
        with trace.get_tracer("user-code").start_as_current_span("user-span"):
            pass
    finally:
        await rt.stop(timeout=5)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    yield
    shutdown_telemetry()


async def test_otlp_grpc_like_the_original(grpc_receiver: GrpcReceiver, tmp_path: Path) -> None:
    handle = init_telemetry(service_name="compat-svc", otlp_endpoint=grpc_receiver.endpoint)
    assert handle.enabled and handle.settings.exporters == ("otlp-grpc",)
    assert init_telemetry(service_name="other") is handle, "a second call changes nothing"
    await traced_run()
    shutdown_telemetry()
    assert not tracing_active()
    names = {s.name for s in grpc_receiver.spans()}
    assert {"invoke_agent researcher", "user-span"} <= names, names
    assert {s.resource["service.name"] for s in grpc_receiver.spans()} == {"compat-svc"}
    assert not (tmp_path / ".loom").exists(), "an explicit endpoint exports only there"
    shutdown_telemetry()  # idempotent


async def test_otlp_http_when_asked(http_receiver: HttpReceiver) -> None:
    init_telemetry(otlp_endpoint=http_receiver.endpoint, protocol="http/protobuf")
    await traced_run()
    shutdown_telemetry()
    assert "invoke_agent researcher" in {s.name for s in http_receiver.spans()}


async def test_without_an_endpoint_spans_go_to_the_trace_file(tmp_path: Path) -> None:
    handle = init_telemetry(service_name="compat-file")
    await traced_run()
    shutdown_telemetry()
    assert handle.trace_file is not None and handle.trace_file.parent == (
        tmp_path / ".loom" / "traces"
    )
    text = handle.trace_file.read_text()
    assert "invoke_agent researcher" in text and "compat-file" in text
    # After shutdown a new call installs again.
    again = init_telemetry(service_name="compat-file-2")
    assert again is not handle and again.enabled


async def test_an_existing_run_setup_is_left_alone(
    grpc_receiver: GrpcReceiver, tmp_path: Path
) -> None:
    run = setup({"exporters": ["file"]})
    try:
        handle = init_telemetry(otlp_endpoint=grpc_receiver.endpoint)
        assert not handle.enabled
        await traced_run()
        shutdown_telemetry()
        assert tracing_active(), "the run's providers are still installed"
    finally:
        run.shutdown()
    assert run.trace_file is not None and "invoke_agent" in run.trace_file.read_text()
    assert grpc_receiver.spans() == []

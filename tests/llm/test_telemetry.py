"""`chat {model}` spans with GenAI semantic-convention and seed attributes."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from conftest import completion, respond, sse, text_chunks
from loom.llm import ServerError, set_capture_content
from loom.llm import retry as retry_mod

MSG = [{"role": "user", "content": "what is loom"}]


@pytest.fixture(autouse=True)
def _reset_capture(monkeypatch):
    monkeypatch.setattr(retry_mod, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    yield
    set_capture_content(None)


async def test_call_span_attributes(fault_server, make_provider, spans):
    fault_server.push(respond(500, {}))
    await make_provider(name="deepseek", max_tokens=50, temperature=0.2).call(MSG)
    (span,) = spans.get_finished_spans()
    a = span.attributes
    assert span.name == "chat fake-model" and span.kind == SpanKind.CLIENT
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "fake-model"
    assert a["gen_ai.request.max_tokens"] == 50 and a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.response.id"] == "chatcmpl-test"
    assert a["gen_ai.response.model"] == "fake-model"
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (7, 3)
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == fault_server.port
    assert a["llm.provider"] == "deepseek" and a["llm.model"] == "fake-model"
    assert (a["llm.tokens.prompt"], a["llm.tokens.completion"]) == (7, 3)
    assert a["llm.latency.ms"] > 0
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    (event,) = span.events
    assert event.name == "retry" and event.attributes["error.type"] == "500"


async def test_error_span(fault_server, make_provider, spans):
    fault_server.push(respond(503, {}))
    with pytest.raises(ServerError):
        await make_provider(max_retries=0).call(MSG)
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "503"


async def test_content_only_when_opted_in(fault_server, make_provider, spans):
    set_capture_content(True)
    fault_server.push(respond(200, completion("Loom is a runtime")))
    await make_provider().call(MSG)
    (span,) = spans.get_finished_spans()
    assert "what is loom" in span.attributes["gen_ai.input.messages"]
    assert "Loom is a runtime" in span.attributes["gen_ai.output.messages"]


async def test_env_switch(fault_server, make_provider, spans, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    await make_provider().call(MSG)
    assert "gen_ai.input.messages" in spans.get_finished_spans()[0].attributes


async def test_stream_span_time_to_first_chunk(fault_server, make_provider, spans):
    fault_server.push(sse(text_chunks(["a", "b"])))
    [_ async for _ in make_provider(quirks="openai").stream(MSG)]
    (span,) = spans.get_finished_spans()
    a = span.attributes
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.response.time_to_first_chunk"] > 0
    assert a["gen_ai.usage.output_tokens"] == 2


async def test_span_parent_is_current_span(fault_server, make_provider, spans):
    from opentelemetry import trace

    with trace.get_tracer("test").start_as_current_span("invoke_agent a") as parent:
        await make_provider().call(MSG)
    chat = next(s for s in spans.get_finished_spans() if s.name.startswith("chat"))
    assert chat.parent is not None
    assert chat.parent.span_id == parent.get_span_context().span_id

"""The span helpers' cheap paths give what the plain ones gave: the content switch read
from the environment's own storage, tool and agent spans as context-manager objects
(compared with the SDK tracer's path), the finish reasons already a tuple."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom.telemetry import chat_spans
from loom.telemetry.agent_spans import invoke_agent_span
from loom.telemetry.fast_spans import LoomSpan
from loom.telemetry.state import (
    CAPTURE_ENV,
    EnvVar,
    Telemetry,
    capture_content,
    set_bus_spans,
    set_capture_content,
)
from loom.telemetry.tool_spans import tool_span


def test_env_var_reads_what_os_environ_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    var = EnvVar("LOOM_TEST_ENV_VAR")
    assert var.direct  # fails if os.environ's storage is no longer the one known
    monkeypatch.delenv("LOOM_TEST_ENV_VAR", raising=False)
    assert var.get() is None
    monkeypatch.setenv("LOOM_TEST_ENV_VAR", " Yes ")
    assert var.get() == os.environ.get("LOOM_TEST_ENV_VAR") == " Yes "
    os.environ["LOOM_TEST_ENV_VAR"] = "é"
    assert var.get() == "é"
    del os.environ["LOOM_TEST_ENV_VAR"]
    assert var.get() is None


def test_env_var_follows_a_replaced_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    var = EnvVar("LOOM_TEST_ENV_VAR")
    monkeypatch.setattr(os, "environ", {"LOOM_TEST_ENV_VAR": "1"})
    assert not var.direct
    assert var.get() == "1"


def test_capture_content_follows_the_environment_at_run_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not capture_content()
    monkeypatch.setenv(CAPTURE_ENV, "TRUE ")
    assert capture_content()
    monkeypatch.setenv(CAPTURE_ENV, "0")
    assert not capture_content()
    monkeypatch.setenv(CAPTURE_ENV, "on")
    set_capture_content(False)
    assert not capture_content()
    set_capture_content(None)
    assert capture_content()
    monkeypatch.delenv(CAPTURE_ENV)
    assert not capture_content()


def _pair(capture: bool) -> list[tuple[Telemetry, InMemorySpanExporter]]:
    """A Telemetry on Loom's fast spans and one kept on the SDK tracer (a length limit
    no attribute here reaches)."""
    out = []
    for limits in (SpanLimits(), SpanLimits(max_span_attribute_length=100_000)):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(span_limits=limits)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        out.append((Telemetry(tracer_provider=provider, capture=capture), exporter))
    assert out[0][0].fast_tracer() is not None and out[1][0].fast_tracer() is None
    return out


def _content(exporter: InMemorySpanExporter) -> list[Any]:
    return [
        (
            s.name,
            s.kind,
            dict(s.attributes or {}),
            s.status.status_code,
            s.status.description,
            [(e.name, dict(e.attributes or {})) for e in s.events],
        )
        for s in exporter.get_finished_spans()
    ]


class _Spec:
    source = "python"
    description = "Adds numbers."


@pytest.mark.parametrize("capture", [False, True])
def test_tool_spans_match_the_sdk_path(capture: bool) -> None:
    results = []
    for tel, exporter in _pair(capture):
        with tool_span(tel, "calc:add", "c1", _Spec(), {"a": 1}) as handle:
            handle.set_result(2)
        for exc in (ValueError("bad"), asyncio.CancelledError()):
            with pytest.raises(type(exc)), tool_span(tel, "t", "c2", None, {}):
                raise exc
        fast = isinstance(exporter.get_finished_spans()[0], LoomSpan)
        results.append((fast, _content(exporter)))
    (fast, a), (slow, b) = results
    assert fast and not slow
    assert a == b
    assert a[1][2]["loom.tool.outcome"] == "error" and a[1][3].name == "ERROR"
    assert a[2][2]["loom.tool.outcome"] == "cancelled"
    assert ("gen_ai.tool.call.arguments" in a[0][2]) is capture


class _Event:
    topic = "jobs"
    id = "ev-1"
    type = "loom.message"
    source = "client"
    correlation_id = "c-9"
    headers = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}


def test_invoke_agent_spans_match_the_sdk_path() -> None:
    results = []
    for tel, exporter in _pair(False):
        with invoke_agent_span(tel, "a", _Event()) as span:
            assert trace.get_current_span() is span
        with pytest.raises(KeyError), invoke_agent_span(tel, "a", _Event()):
            raise KeyError("x")
        results.append(_content(exporter))
    assert results[0] == results[1]
    assert results[0][1][3].name == "UNSET"  # the dispatcher marks failures itself


def test_invoke_agent_without_a_span_runs_in_the_senders_context() -> None:
    (tel, exporter), _ = _pair(False)
    set_bus_spans("none")
    try:
        before = otel_context.get_current()
        with invoke_agent_span(tel, "a", _Event()) as span:
            assert not span.is_recording()
            ctx = trace.get_current_span().get_span_context()
            assert ctx.trace_id == int("ab" * 16, 16) and ctx.is_remote
        assert otel_context.get_current() == before
        with pytest.raises(ValueError), invoke_agent_span(tel, "a", _Event()):
            raise ValueError
        assert otel_context.get_current() == before
    finally:
        set_bus_spans("all")
    assert exporter.get_finished_spans() == ()


class _Usage:
    prompt_tokens = 3
    completion_tokens = 4
    cached_tokens = 0
    reasoning_tokens = 0


class _Result:
    id = "r1"
    model = "m"
    finish_reason = "stop"
    usage = _Usage()
    cost_usd = 0.0
    cached = False
    provider = ""
    message = None


def test_chat_spans_match_the_sdk_path() -> None:
    results = []
    for tel, exporter in _pair(False):
        span = chat_spans.start_chat_span(
            provider="p", system="s", body={"model": "m", "messages": []}, host="h",
            port=1, stream=False, telemetry=tel,
        )  # fmt: skip
        chat_spans.end_ok(span, _Result(), 1.5, telemetry=tel)
        results.append(_content(exporter))
    assert results[0] == results[1]
    assert results[0][0][2]["gen_ai.response.finish_reasons"] == ("stop",)


@pytest.mark.parametrize(
    "value",
    [("a", "b"), ("a",), (), ("a", 1), ("a", None), ["a", "b"], (1, 2), ("a", b"x")],
)
def test_tuple_shortcut_cleans_as_the_sdk(value: Any) -> None:
    from opentelemetry.attributes import _clean_attribute_value

    from loom.telemetry.fast_spans import _clean

    assert _clean(value) == _clean_attribute_value(value, None)
    assert type(_clean(value)) is type(_clean_attribute_value(value, None))


def test_empty_hooks_are_recognised() -> None:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from loom.telemetry.fast_spans import is_empty

    class Doc:
        def hook(self, span: Any) -> None:
            """Nothing."""

        def body(self, span: Any) -> None:
            span.append(1)

    assert is_empty(Doc.hook) and not is_empty(Doc.body)
    # The SDK's own: if one of these gains a body, Loom calls it again.
    assert is_empty(SpanProcessor.on_start) and is_empty(BatchSpanProcessor.on_start)
    assert is_empty(BatchSpanProcessor._on_ending)
    assert not is_empty(BatchSpanProcessor.on_end) and not is_empty(len)


def test_every_processor_hook_is_called_in_order_also_for_one_added_later() -> None:
    from opentelemetry.sdk.trace import SpanProcessor

    calls: list[tuple[str, str, str]] = []

    class Recorder(SpanProcessor):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            calls.append((self.tag, "start", span.name))

        def _on_ending(self, span: Any) -> None:
            calls.append((self.tag, "ending", span.name))

        def on_end(self, span: Any) -> None:
            calls.append((self.tag, "end", span.name))

    class EndOnly(SpanProcessor):
        def on_end(self, span: Any) -> None:
            calls.append(("e", "end", span.name))

    provider = TracerProvider()
    provider.add_span_processor(Recorder("a"))
    provider.add_span_processor(EndOnly())
    tel = Telemetry(tracer_provider=provider)
    fast = tel.fast_tracer()
    assert fast is not None and fast.hooks() is not None
    with tool_span(tel, "one", "c1", None, {}):
        provider.add_span_processor(Recorder("b"))  # sees the end, as with the SDK
    with tool_span(tel, "two", "c2", None, {}):
        pass
    assert calls == [
        ("a", "start", "execute_tool one"),
        ("a", "ending", "execute_tool one"),
        ("b", "ending", "execute_tool one"),
        ("a", "end", "execute_tool one"),
        ("e", "end", "execute_tool one"),
        ("b", "end", "execute_tool one"),
        ("a", "start", "execute_tool two"),
        ("b", "start", "execute_tool two"),
        ("a", "ending", "execute_tool two"),
        ("b", "ending", "execute_tool two"),
        ("a", "end", "execute_tool two"),
        ("e", "end", "execute_tool two"),
        ("b", "end", "execute_tool two"),
    ]

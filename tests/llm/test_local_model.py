"""Integration tests against the real SmolLM2-135M server (llama-cpp-python) on 127.0.0.1.

They assert structure (schema-valid tool calls, usage, finish reasons, stream order),
never wording: the model is tiny.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from loom.llm import (
    FinishEvent,
    LLMConfig,
    LLMProvider,
    Message,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageEvent,
)

pytestmark = pytest.mark.timeout(180)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
async def llm(smollm2):
    provider = LLMProvider(
        None,
        LLMConfig(
            name="smollm2",
            base_url=smollm2.base_url,
            model=smollm2.model,
            max_tokens=24,
            temperature=0.0,
            max_concurrency=1,
            timeout=60,
        ),
    )
    yield provider
    await provider.aclose()


def _valid_weather_args(args: dict) -> bool:
    return set(args) >= {"city"} and isinstance(args["city"], str)


async def test_plain_call(llm):
    r = await llm.call([{"role": "user", "content": "Say hello."}])
    assert isinstance(r.content, str) and r.content
    assert r.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert not r.usage.estimated
    assert r.model == "smollm2-135m-instruct" and r.id


async def test_max_tokens_gives_length(llm):
    r = await llm.call(
        [{"role": "user", "content": "Write a long story about a dragon."}], max_tokens=3
    )
    assert r.finish_reason == "length" and r.usage.completion_tokens == 3


async def test_named_tool_choice_gives_schema_valid_call(llm):
    r = await llm.call(
        [{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="get_weather",
        max_tokens=40,
    )
    assert r.finish_reason == "tool_calls"
    (call,) = r.tool_calls
    assert call.name == "get_weather" and call.id
    assert call.arguments_error is None and _valid_weather_args(call.arguments)


async def test_tool_round_trip_with_assistant_tool_message(llm):
    # llama.cpp answers 500 to an assistant tool-call turn with content null; the quirk
    # table sends "" (base_url is loopback, so force the llamacpp profile).
    llm = llm.with_options(quirks="llamacpp")
    msgs: list = [Message.user("What is the weather in Oslo?")]
    r = await llm.call(msgs, tools=[WEATHER], tool_choice="get_weather", max_tokens=40)
    msgs += [r.message, Message.tool_result(r.tool_calls[0].id, '{"temp_c": 3}')]
    r2 = await llm.call(msgs, max_tokens=12)
    assert r2.finish_reason in ("stop", "length")
    assert r2.content


async def test_stream_order_and_usage(llm):
    events = [
        e
        async for e in llm.stream_events(
            [{"role": "user", "content": "Count: 1, 2,"}], max_tokens=8
        )
    ]
    kinds = [type(e) for e in events]
    assert kinds[-2:] == [UsageEvent, FinishEvent]
    assert all(k is TextDelta for k in kinds[:-2]) and len(kinds) > 2
    final = events[-1].response
    assert final.content == "".join(e.text for e in events if isinstance(e, TextDelta))
    assert final.finish_reason in ("stop", "length")
    # llama.cpp ignores stream_options: usage is counted, and marked as estimated.
    assert events[-2].usage.completion_tokens > 0 and events[-2].usage.estimated


async def test_stream_tool_call_events(llm):
    events = [
        e
        async for e in llm.stream_events(
            [{"role": "user", "content": "Weather in Rome?"}],
            tools=[WEATHER],
            tool_choice="get_weather",
            max_tokens=40,
        )
    ]
    kinds = [type(e) for e in events]
    start = kinds.index(ToolCallStart)
    complete = kinds.index(ToolCallComplete)
    assert start < complete and ToolCallDelta in kinds[start:complete]
    call = events[complete].tool_call
    assert call.name == "get_weather" and _valid_weather_args(call.arguments)
    deltas = "".join(e.arguments_delta for e in events if isinstance(e, ToolCallDelta))
    assert deltas == call.raw_arguments
    assert events[-1].finish_reason == "tool_calls"


async def test_seed_stream_api(llm):
    chunks = [c async for c in llm.stream(messages=[{"role": "user", "content": "Hi!"}])]
    assert chunks and all(isinstance(c, str) for c in chunks)


class Person(BaseModel):
    name: str
    age: int


async def test_call_json_schema_valid(llm):
    llm = llm.with_options(quirks="llamacpp")  # grammar-constrained json_object
    p = await llm.call_json(
        [{"role": "user", "content": "Invent a person."}], Person, max_tokens=60
    )
    assert isinstance(p, Person)


async def test_concurrent_calls_queue_on_single_slot_server(llm):
    rs = await asyncio.gather(
        *[llm.call([{"role": "user", "content": f"Number {i}"}], max_tokens=4) for i in range(4)]
    )
    assert all(r.usage.completion_tokens > 0 for r in rs)


async def test_provider_serves_its_own_model():
    """`serve = "smollm2"` (the `local` preset): Loom starts the server and stops it."""
    from loom.llm.local_server import unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    llm = LLMProvider.from_name(None, "local")
    r = await llm.call([{"role": "user", "content": "Hi"}], max_tokens=4)
    assert r.usage.completion_tokens > 0
    server = llm._server
    assert server is not None and server.running and llm.base_url.startswith("http://127.0.0.1:")
    await llm.aclose()
    assert not server.running


async def test_server_that_dies_reports_its_log(tmp_path):
    from loom.llm import LocalServerError
    from loom.llm.local_server import LocalModelServer, unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"this is not a gguf file")
    server = LocalModelServer(str(bogus), startup_timeout=60, log_path=tmp_path / "srv.log")
    with pytest.raises(LocalServerError, match="exited with code") as ei:
        await server.start()
    assert "srv.log" in str(ei.value) and len(str(ei.value).splitlines()) > 1
    assert not server.running


async def test_server_not_ready_in_time(tmp_path):
    from loom.llm import LocalServerError
    from loom.llm.local_server import LocalModelServer, unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    server = LocalModelServer("smollm2", startup_timeout=0.05)
    with pytest.raises(LocalServerError, match="not ready after"):
        await server.start()
    assert not server.running


def test_missing_model_file():
    from loom.llm import LocalServerError
    from loom.llm.local_server import find_gguf

    with pytest.raises(LocalServerError, match="not found"):
        find_gguf("/nonexistent/model.gguf")

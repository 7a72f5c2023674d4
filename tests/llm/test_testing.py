"""loom.testing: scripted models and the network guard."""

from __future__ import annotations

import httpx
import pytest
from pydantic import BaseModel

from loom.llm import FinishEvent, LLMConfig, LLMProvider, TextDelta, ToolCallComplete
from loom.testing import FunctionModel, NetworkBlockedError, ScriptedModel, block_network, tool_call

MSG = [{"role": "user", "content": "hello there"}]


async def test_scripted_model_in_order_and_records_calls():
    llm = ScriptedModel([tool_call("web:search", query="loom"), "done"])
    r1 = await llm.call(MSG, tools=[{"name": "web:search"}])
    assert r1.tool_calls[0].name == "web:search"
    assert r1.tool_calls[0].arguments == {"query": "loom"}
    assert r1.finish_reason == "tool_calls"
    r2 = await llm.call([*MSG, r1.message])
    assert (r2.content, r2.finish_reason) == ("done", "stop")
    assert r2.usage.prompt_tokens > 0
    assert len(llm.calls) == 2 and llm.calls[0].tools == [{"name": "web:search"}]
    assert llm.calls[1].messages[-1]["role"] == "assistant"
    with pytest.raises(AssertionError, match="only 2 answers"):
        await llm.call(MSG)


async def test_scripted_errors_and_repeat_last():
    from loom.llm import RateLimitError

    llm = ScriptedModel([RateLimitError("x", status_code=429), "ok"], repeat_last=True)
    with pytest.raises(RateLimitError):
        await llm.call(MSG)
    assert [(await llm.call(MSG)).content for _ in range(3)] == ["ok"] * 3


async def test_scripted_stream_events():
    llm = ScriptedModel(["one two three", [tool_call("f", a=1)]])
    assert "".join([p async for p in llm.stream(MSG)]) == "one two three"
    events = [e async for e in llm.stream_events(MSG)]
    assert isinstance(events[-1], FinishEvent)
    done = [e for e in events if isinstance(e, ToolCallComplete)]
    assert done[0].tool_call.arguments == {"a": 1}
    assert not any(isinstance(e, TextDelta) for e in events)


async def test_function_model_sees_the_call():
    async def answer(call):
        return f"you said: {call.last_user_text}"

    llm = FunctionModel(answer)
    assert (await llm.call(MSG)).content == "you said: hello there"
    assert await llm.generate("ping") == "you said: ping"


async def test_call_json_with_test_model():
    class Out(BaseModel):
        x: int

    llm = ScriptedModel(["not json", '{"x": 3}'])
    assert (await llm.call_json(MSG, Out)) == Out(x=3)
    assert "not valid" in llm.calls[1].messages[-1]["content"]


async def test_block_network_refuses_remote_hosts():
    llm = LLMProvider(
        None,
        LLMConfig(
            name="remote",
            base_url="https://api.openai.com/v1",
            model="gpt-4o-mini",
            api_key="sk-test",
            fallbacks=[],
            max_retries=3,
        ),
    )
    with block_network(), pytest.raises(NetworkBlockedError, match=r"api\.openai\.com"):
        await llm.call(MSG)
    await llm.aclose()


async def test_block_network_not_swallowed_by_fallbacks():
    project = {
        "llm": {
            "primary": {"base_url": "https://api.example.com/v1", "fallbacks": ["second"]},
            "second": {"base_url": "https://other.example.com/v1"},
        }
    }
    llm = LLMProvider.from_config(None, "primary", project)
    with block_network(), pytest.raises(NetworkBlockedError):
        await llm.call(MSG)
    await llm.aclose()


async def test_block_network_allows_loopback(fault_server, make_provider):
    with block_network():
        assert (await make_provider().call(MSG)).content == "hello"


async def test_block_network_covers_plain_httpx():
    with block_network():
        async with httpx.AsyncClient() as client:
            with pytest.raises(NetworkBlockedError):
                await client.get("https://example.com/")


def test_block_network_covers_sync_httpx_and_restores():
    with block_network(), httpx.Client() as sync_client, pytest.raises(NetworkBlockedError):
        sync_client.get("https://example.com/")
    from loom.llm import _http

    assert _http._blocked == 0
    assert httpx.AsyncHTTPTransport.handle_async_request.__name__ == "handle_async_request"


async def test_block_network_allow_list():
    from loom.llm._http import check_host

    with block_network(allow=["models.internal"]):
        check_host("models.internal")
        with pytest.raises(NetworkBlockedError):
            check_host("api.openai.com")

"""Provider plumbing: the pool, caller-supplied clients, event loops, messages."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from conftest import FaultServer
from loom.llm import LLMConfig, LLMError, LLMProvider, LLMResponse, Message, Usage

MSG = [{"role": "user", "content": "hi"}]


async def test_one_pool_reused(fault_server, make_provider):
    llm = make_provider()
    for _ in range(5):
        await llm.call(MSG)
    client = llm._client
    await llm.call(MSG)
    assert llm._client is client
    assert len(fault_server.requests) == 6


async def test_caller_supplied_client_gets_headers_and_is_not_closed(fault_server):
    seen = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async with httpx.AsyncClient(event_hooks={"request": [hook]}) as client:
        llm = LLMProvider(
            None,
            LLMConfig(base_url=fault_server.base_url, model="m", api_key="sk-abcdef"),
            http_client=client,
        )
        r = await llm.call(MSG)
        assert r.content == "hello" and seen == ["/v1/chat/completions"]
        assert fault_server.requests[0].headers["authorization"] == "Bearer sk-abcdef"
        await llm.aclose()
        assert not client.is_closed


async def test_with_options_shares_pool_and_overrides(fault_server, make_provider):
    llm = make_provider(temperature=0.5)
    await llm.call(MSG)
    cold = llm.with_options(temperature=0.0, model="other")
    await cold.call(MSG)
    assert cold._client is llm._client
    bodies = [r.json() for r in fault_server.requests]
    assert (bodies[0]["temperature"], bodies[1]["temperature"]) == (0.5, 0.0)
    assert bodies[1]["model"] == "other"
    await cold.aclose()
    await llm.call(MSG)  # closing the copy did not close the shared pool


# The first loop's sockets can only be dropped, not closed, once that loop is gone.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_provider_survives_a_new_event_loop():
    server = FaultServer()
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    def run_server() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=run_server, daemon=True)
    t.start()
    ready.wait(5)
    try:
        llm = LLMProvider(None, LLMConfig(base_url=server.base_url, model="m"))
        assert asyncio.run(llm.call(MSG)).content == "hello"
        assert asyncio.run(llm.call(MSG)).content == "hello"  # a second asyncio.run
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


async def test_closed_provider_refuses(make_provider):
    llm = make_provider()
    await llm.aclose()
    await llm.aclose()  # idempotent
    with pytest.raises(LLMError, match="closed"):
        await llm.call(MSG)


async def test_messages_as_models_and_overrides(fault_server, make_provider):
    llm = make_provider(extra_body={"top_p": 0.9})
    await llm.call(
        [Message.system("be brief"), Message.user("hi")],
        seed=7,
        extra_body={"stop": ["\n"]},
        extra_headers={"X-Trace": "1"},
    )
    req = fault_server.requests[0]
    body = req.json()
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert (body["top_p"], body["seed"], body["stop"]) == (0.9, 7, ["\n"])
    assert req.headers["x-trace"] == "1"
    assert "temperature" not in body and "max_tokens" not in body


async def test_string_messages_rejected(make_provider):
    with pytest.raises(TypeError):
        await make_provider().call("hello")  # type: ignore[arg-type]


def test_seed_response_shapes():
    r = LLMResponse(
        content="Hi there!",
        finish_reason="stop",
        usage={"prompt_tokens": 10, "completion_tokens": 5},
    )
    assert r.usage["prompt_tokens"] == 10 and r.usage.get("nope", -1) == -1
    assert (r.usage + Usage(prompt_tokens=1)).prompt_tokens == 11
    assert Message(role="user", content="Hello!").role == "user"
    assert "raw" not in repr(r)


async def test_pydantic_model_as_response_format(fault_server, make_provider):
    from pydantic import BaseModel

    class Answer(BaseModel):
        text: str

    await make_provider().call(MSG, response_format=Answer)
    fmt = fault_server.requests[0].json()["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Answer"
    assert fmt["json_schema"]["schema"]["properties"]["text"]["type"] == "string"

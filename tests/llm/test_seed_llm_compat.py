"""The original Loom's LLM module docs (the seed) run as written against ``loom.llm``.

The seed's snippets are kept below verbatim, as text, and executed: its error handling
against the fault server (429, 401, a stall, a closed port), its usage against the real
local model (SmolLM2 standing in for DeepSeek through a loom.toml whose
``[llm.deepseek]`` points at it). Placeholders (``messages=[...]``, ``base_url="..."``)
are filled by :func:`fill`, which fails if the text it replaces is not there; nothing
else in a snippet changes, except where a comment says so.
"""

from __future__ import annotations

import pickle
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import respond, sse, stall, text_chunks
from loom import Agent, Runtime
from loom.llm import (
    AuthenticationError,
    LLMConfig,
    LLMConnectError,
    LLMConnectionError,
    LLMProvider,
    LLMResponse,
    LLMStatusError,
    LLMTimeoutError,
    RateLimitError,
    ServerError,
)

pytestmark = pytest.mark.timeout(180)

MSG = [{"role": "user", "content": "hi"}]
KEY = "sk-seed-compat-secret-1234"

# -- the seed's snippets, verbatim ----------------------------------------------------

SEED_OVERVIEW = """\
from loom import Agent
from loom.llm import LLMProvider

agent = Agent(agent_id="researcher", topics=["tasks"])
await agent.start()

# Use pre-configured provider
llm = LLMProvider.from_name(agent.ctx, "deepseek")

# Call LLM
response = await llm.call(messages=[
    {"role": "system", "content": "You are a research assistant."},
    {"role": "user", "content": "Summarize recent AI advances"},
])
print(response.content)
"""

SEED_LLMCONFIG = """\
from loom.llm import LLMConfig

config = LLMConfig(
    base_url="https://api.deepseek.com/v1",
    model="deepseek-chat",
    api_key="sk-...",
    temperature=0.7,
    max_tokens=4096,
    timeout_ms=30000,
)
"""

SEED_TYPES = """\
from loom.llm import Message, LLMResponse

# Request message
msg = Message(role="user", content="Hello!")

# Response
response = LLMResponse(
    content="Hi there!",
    finish_reason="stop",
    usage={"prompt_tokens": 10, "completion_tokens": 5},
)
"""

SEED_SIMPLE_CHAT = """\
response = await llm.call(messages=[
    {"role": "user", "content": "What is Loom?"}
])
print(response.content)
"""

SEED_SYSTEM_PROMPTS = """\
response = await llm.call(messages=[
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Explain quantum computing"},
])
"""

SEED_STREAMING = """\
async for chunk in llm.stream(messages=[
    {"role": "user", "content": "Write a poem"}
]):
    print(chunk, end="", flush=True)
"""

SEED_FROM_CONFIG = """\
from loom.runtime import load_project_config

config = load_project_config("loom.toml")
llm = LLMProvider.from_config(ctx, "deepseek", config)
"""

SEED_API_ERRORS = """\
try:
    response = await llm.call(messages=[...])
except httpx.HTTPStatusError as e:
    if e.response.status_code == 429:
        # Rate limit - backoff and retry
        await asyncio.sleep(5)
    elif e.response.status_code == 401:
        # Invalid API key
        print("Check your API key")
"""

SEED_TIMEOUTS = """\
from loom.llm import LLMConfig

config = LLMConfig(
    base_url="...",
    model="...",
    timeout_ms=60000,  # 60s
)

llm = LLMProvider(ctx, config)

try:
    response = await llm.call(messages=[...])
except httpx.TimeoutException:
    print("LLM call timed out")
"""

SEED_NETWORK_ERRORS = """\
import httpx

try:
    response = await llm.call(messages=[...])
except httpx.ConnectError:
    print("Failed to connect to LLM API")
    # Fallback to different provider
    llm = LLMProvider.from_name(ctx, "local")
"""

SEED_COST = """\
total_prompt_tokens = 0
total_completion_tokens = 0

response = await llm.call(messages=[...])
total_prompt_tokens += response.usage["prompt_tokens"]
total_completion_tokens += response.usage["completion_tokens"]

print(f"Total tokens: {total_prompt_tokens + total_completion_tokens}")
print(f"Estimated cost: ${estimate_cost(total_prompt_tokens, total_completion_tokens)}")
"""

SEED_POOLING = """\
llm = LLMProvider(ctx, config)
# Multiple calls reuse connection
for i in range(100):
    await llm.call(messages=[...])  # Fast!
"""

SEED_PARALLEL = """\
import asyncio

# Call multiple LLMs in parallel
tasks = [
    llm1.call(messages=[...]),
    llm2.call(messages=[...]),
    llm3.call(messages=[...]),
]
responses = await asyncio.gather(*tasks)
"""

SEED_CUSTOM = """\
from loom.llm import LLMConfig, LLMProvider

config = LLMConfig(
    base_url="https://my-llm.example.com/v1",
    model="my-model-v1",
    api_key="custom-key",
    temperature=0.8,
    max_tokens=4096,
)

llm = LLMProvider(ctx, config)
"""

#: What ``messages=[...]`` becomes.
FILLED_MESSAGES = 'messages=[{"role": "user", "content": "Say hi."}]'


def fill(snippet: str, replacements: dict[str, str]) -> str:
    """``snippet`` with each placeholder replaced; every placeholder must occur."""
    for old, new in replacements.items():
        assert old in snippet, f"placeholder {old!r} is not in the snippet"
        snippet = snippet.replace(old, new)
    return snippet


def fill_messages(snippet: str) -> str:
    assert "messages=[...]" in snippet
    return snippet.replace("messages=[...]", FILLED_MESSAGES)


async def run(snippet: str, **names: Any) -> dict[str, Any]:
    """Run ``snippet`` as the body of an async function whose parameters are ``names``
    (so a snippet may rebind them), and return its local variables."""
    params = ", ".join(names)
    source = (
        f"async def __snippet({params}):\n"
        + textwrap.indent(snippet, "    ")
        + "\n    return locals()\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "<seed snippet>", "exec"), namespace)
    result: dict[str, Any] = await namespace["__snippet"](**names)
    return result


class Sleeps:
    """Stands in for the snippet's ``asyncio`` so its ``await asyncio.sleep(5)`` is
    recorded rather than waited for."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.calls.append(seconds)


# -- error handling, against the fault server ---------------------------------------------

TRANSPORTS = ["aiohttp", "httpx"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_seed_api_errors_rate_limit(fault_server, make_provider, transport, capsys):
    fault_server.push(respond(429, {"error": {"message": "slow down"}}))
    llm = make_provider(transport=transport, max_retries=0)
    sleeps = Sleeps()
    await run(fill_messages(SEED_API_ERRORS), llm=llm, httpx=httpx, asyncio=sleeps)
    assert sleeps.calls == [5]
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_seed_api_errors_bad_key(fault_server, make_provider, transport, capsys):
    fault_server.push(respond(401, {"error": {"message": f"Incorrect API key: {KEY}"}}))
    llm = make_provider(transport=transport, api_key=KEY)
    sleeps = Sleeps()
    await run(fill_messages(SEED_API_ERRORS), llm=llm, httpx=httpx, asyncio=sleeps)
    assert capsys.readouterr().out == "Check your API key\n"
    assert sleeps.calls == []
    assert len(fault_server.requests) == 1  # a 401 is not retried


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_seed_timeouts(fault_server, transport, capsys, monkeypatch):
    from loom.llm import retry as retry_mod

    monkeypatch.setattr(retry_mod, "INITIAL_RETRY_DELAY", 0.01)
    fault_server.push(stall(30), stall(30), stall(30))
    # The one change beyond placeholders: 60 s would make this test a minute long.
    snippet = fill(
        SEED_TIMEOUTS,
        {
            'base_url="..."': f'base_url="{fault_server.base_url}", transport="{transport}"',
            'model="..."': 'model="fake-model"',
            "timeout_ms=60000,  # 60s": "timeout_ms=300,  # 0.3 s",
        },
    )
    t0 = time.monotonic()
    names = await run(fill_messages(snippet), ctx=None, httpx=httpx, LLMProvider=LLMProvider)
    elapsed = time.monotonic() - t0
    assert capsys.readouterr().out == "LLM call timed out\n"
    llm = names["llm"]
    assert llm.config.timeout == 0.3
    assert len(fault_server.requests) == 3  # the first attempt and two retries
    assert 0.9 <= elapsed < 6
    await llm.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_seed_network_errors_fall_back_to_local(
    free_port, transport, capsys, seed_project, smollm2
):
    ctx = seed_project.ctx
    llm = LLMProvider(
        ctx,
        LLMConfig(
            name="down",
            base_url=f"http://127.0.0.1:{free_port}/v1",
            model="m",
            transport=transport,
            max_retries=0,
        ),
    )
    names = await run(fill_messages(SEED_NETWORK_ERRORS), llm=llm, ctx=ctx, LLMProvider=LLMProvider)
    assert capsys.readouterr().out == "Failed to connect to LLM API\n"
    fallback = names["llm"]
    assert fallback is not llm and fallback.name == "local"
    assert fallback.base_url == smollm2.base_url  # [llm.local] of the project
    answer = await fallback.call(MSG, max_tokens=8)
    assert answer.usage.completion_tokens > 0


# -- the same errors, in detail, for calls and streams ----------------------------------


async def _fail(llm: LLMProvider, mode: str) -> BaseException:
    try:
        if mode == "call":
            await llm.call(MSG)
        else:
            async for _ in llm.stream(MSG):
                pass
    except BaseException as exc:
        return exc
    raise AssertionError("no error")


def _assert_no_key(exc: BaseException) -> None:
    assert KEY not in str(exc) and KEY not in repr(exc)
    assert KEY not in pickle.dumps(exc).decode("latin-1")
    request = exc.request if isinstance(exc, httpx.HTTPError) else None
    if request is not None:
        assert "authorization" not in request.headers
        assert KEY not in str(request.url)


@pytest.mark.parametrize("mode", ["call", "stream"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_status_errors_are_httpx_status_errors(fault_server, make_provider, transport, mode):
    body = {"error": {"message": f"bad key {KEY}", "type": "auth"}}
    fault_server.push(respond(401, body, headers={"x-request-id": "req-1"}))
    llm = make_provider(transport=transport, api_key=KEY)
    exc = await _fail(llm, mode)
    assert isinstance(exc, AuthenticationError)
    assert isinstance(exc, httpx.HTTPStatusError) and isinstance(exc, httpx.HTTPError)
    assert exc.response.status_code == 401 == exc.status_code
    assert exc.response.headers["x-request-id"] == "req-1"
    assert exc.response.json() == {"error": {"message": "bad key ***", "type": "auth"}}
    assert exc.request.method == "POST"
    assert exc.request.url == httpx.URL(f"{fault_server.base_url}/chat/completions")
    assert exc.response.request is exc.request
    _assert_no_key(exc)
    # A copy across a process boundary keeps the type and what the seed reads.
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is AuthenticationError and str(copy) == str(exc)
    assert copy.response.status_code == 401 and copy.request.url == exc.request.url
    assert copy.body == exc.body and copy.provider == "fault"


@pytest.mark.parametrize("mode", ["call", "stream"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rate_limit_and_server_errors(fault_server, make_provider, transport, mode):
    fault_server.push(respond(429, "slow down", content_type="text/plain"))
    exc = await _fail(make_provider(transport=transport, max_retries=0), mode)
    assert isinstance(exc, RateLimitError) and isinstance(exc, httpx.HTTPStatusError)
    assert exc.response.status_code == 429 and exc.response.text == "slow down"
    fault_server.push(respond(503, {"error": "down"}))
    exc = await _fail(make_provider(transport=transport, max_retries=0), mode)
    assert isinstance(exc, ServerError) and exc.response.status_code == 503


@pytest.mark.parametrize("mode", ["call", "stream"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_timeout_is_httpx_timeout_not_connect_error(
    fault_server, make_provider, transport, mode
):
    fault_server.push(stall(30))
    exc = await _fail(make_provider(transport=transport, timeout=0.3, max_retries=0), mode)
    assert isinstance(exc, LLMTimeoutError) and isinstance(exc, TimeoutError)
    assert isinstance(exc, httpx.TimeoutException) and isinstance(exc, httpx.TransportError)
    assert not isinstance(exc, httpx.ConnectError)  # as in httpx
    assert exc.request.url.path == "/v1/chat/completions"
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is LLMTimeoutError and copy.request.url == exc.request.url


async def test_stream_timeout_after_headers(fault_server, make_provider):
    fault_server.push(stall(30, after_headers=True))
    exc = await _fail(make_provider(timeout=0.3, max_retries=0), "stream")
    assert isinstance(exc, LLMTimeoutError) and isinstance(exc, httpx.TimeoutException)


@pytest.mark.parametrize("mode", ["call", "stream"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_closed_port_is_httpx_connect_error(free_port, transport, mode):
    base = f"http://user:{KEY}@127.0.0.1:{free_port}/v1?api-key={KEY}"
    async with LLMProvider(
        None, LLMConfig(base_url=base, model="m", transport=transport, max_retries=0)
    ) as llm:
        exc = await _fail(llm, mode)
    assert isinstance(exc, LLMConnectError) and isinstance(exc, LLMConnectionError)
    assert isinstance(exc, httpx.ConnectError) and isinstance(exc, ConnectionError)
    assert not isinstance(exc, httpx.TimeoutException)
    assert exc.request.url.host == "127.0.0.1" and not exc.request.url.userinfo
    _assert_no_key(exc)
    assert type(pickle.loads(pickle.dumps(exc))) is LLMConnectError


async def test_caller_supplied_client_raises_the_same(fault_server, free_port):
    fault_server.push(respond(429, {"error": "slow"}), stall(30))
    async with httpx.AsyncClient() as client:
        llm = LLMProvider(
            None,
            LLMConfig(base_url=fault_server.base_url, model="m", max_retries=0, timeout=0.3),
            http_client=client,
        )
        assert isinstance(await _fail(llm, "call"), RateLimitError)
        assert isinstance(await _fail(llm, "stream"), httpx.TimeoutException)
        down = LLMProvider(
            None,
            LLMConfig(base_url=f"http://127.0.0.1:{free_port}/v1", model="m", max_retries=0),
            http_client=client,
        )
        assert isinstance(await _fail(down, "call"), httpx.ConnectError)


def test_errors_built_by_hand_have_a_response():
    exc = RateLimitError("x", status_code=429, body={"error": "slow"}, headers={"a": "b"})
    assert isinstance(exc, httpx.HTTPStatusError)
    assert exc.response.status_code == 429 and exc.response.json() == {"error": "slow"}
    with pytest.raises(RuntimeError, match="has not been set"):
        _ = exc.request  # as with httpx's own errors without a request
    copy = pickle.loads(pickle.dumps(exc))
    assert copy.status_code == 429 and copy.headers == {"a": "b"}
    timeout = pickle.loads(pickle.dumps(LLMTimeoutError("t", provider="p")))
    assert isinstance(timeout, httpx.TimeoutException) and timeout.provider == "p"
    assert isinstance(LLMStatusError("s", status_code=418), httpx.HTTPStatusError)


# -- the original call names and options ---------------------------------------------------


async def test_generate_sends_system_as_a_system_message(fault_server, make_provider):
    llm = make_provider()
    text = await llm.generate("What is Loom?", system="Be brief.", temperature=0.1)
    assert text == "hello"
    body = fault_server.requests[0].json()
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is Loom?"},
    ]
    assert "system" not in body and "timeout_ms" not in body
    assert body["temperature"] == 0.1
    await llm.generate("again")
    assert fault_server.requests[1].json()["messages"] == [{"role": "user", "content": "again"}]


async def test_generate_stream_and_chat(fault_server, make_provider):
    fault_server.push(sse(text_chunks(["Hel", "lo"])))
    llm = make_provider()
    pieces = [p async for p in llm.generate_stream("hi", system="S", timeout_ms=5000)]
    assert "".join(pieces) == "Hello"
    body = fault_server.requests[0].json()
    assert body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": "S"}
    assert "timeout_ms" not in body
    assert await llm.chat([{"role": "user", "content": "hi"}], max_tokens=5) == "hello"
    assert fault_server.requests[1].json()["max_tokens"] == 5


@pytest.mark.parametrize("entry", ["generate", "call", "stream", "stream_events"])
async def test_timeout_ms_is_the_timeout(fault_server, make_provider, entry):
    fault_server.push(stall(30))
    llm = make_provider(timeout=60, max_retries=0)
    t0 = time.monotonic()
    with pytest.raises(LLMTimeoutError):
        if entry == "generate":
            await llm.generate("hi", timeout_ms=300)
        elif entry == "call":
            await llm.call(MSG, timeout_ms=300)
        else:
            async for _ in getattr(llm, entry)(MSG, timeout_ms=300):
                pass
    assert 0.25 <= time.monotonic() - t0 < 3
    assert "timeout_ms" not in fault_server.requests[0].json()


async def test_with_options_timeout_ms_and_unknown_settings(make_provider):
    llm = make_provider(api_key=KEY)
    quick = llm.with_options(timeout_ms=250)
    assert (quick.config.timeout, llm.config.timeout) == (0.25, 60.0)
    assert quick._api_key == KEY
    with pytest.raises(ValueError, match="temprature"):
        llm.with_options(temprature=0.1)


async def test_timeout_and_timeout_ms_together_rejected(make_provider):
    with pytest.raises(TypeError, match="timeout_ms"):
        await make_provider().call(MSG, timeout=1, timeout_ms=1000)


@pytest.mark.parametrize("entry", ["call", "generate", "chat", "stream", "generate_stream"])
async def test_unknown_keyword_is_a_type_error(fault_server, make_provider, entry):
    llm = make_provider()
    args: Any = "hi" if entry.startswith("generate") else MSG
    with pytest.raises(TypeError, match=r"'temprature'.*extra_body=\{'temprature'"):
        result = getattr(llm, entry)(args, temprature=0.2)
        if isinstance(result, AsyncIterator):
            async for _ in result:
                pass
        else:
            await result
    assert fault_server.requests == []  # nothing was sent


async def test_stream_keyword_points_to_stream(make_provider):
    with pytest.raises(TypeError, match=r"llm\.stream"):
        await make_provider().call(MSG, stream=True)


async def test_body_fields_and_extra_body_pass_through(fault_server, make_provider):
    llm = make_provider()
    await llm.call(
        MSG,
        top_p=0.5,
        seed=3,
        stop=["\n"],
        presence_penalty=0.1,
        user="u-1",
        extra_body={"top_k": 20, "repeat_penalty": 1.1},
    )
    body = fault_server.requests[0].json()
    assert (body["top_p"], body["seed"], body["stop"], body["user"]) == (0.5, 3, ["\n"], "u-1")
    assert body["presence_penalty"] == 0.1
    assert (body["top_k"], body["repeat_penalty"]) == (20, 1.1)


# -- usage, on the real local model standing in for DeepSeek -------------------------------

TOML = """\
[project]
name = "seed-llm"

# The seed's [llm.deepseek], pointed at the local model (max_tokens kept small: the
# model's context is 2048 tokens).
[llm.deepseek]
base_url = "{base_url}"
model = "{model}"
api_key_env = "DEEPSEEK_API_KEY"
temperature = 0.7
max_tokens = 24

[llm.local]
base_url = "{base_url}"
model = "{model}"
max_tokens = 24
"""


@pytest.fixture
async def seed_project(tmp_path, monkeypatch, smollm2) -> AsyncIterator[Any]:
    """A project directory whose loom.toml points ``deepseek`` and ``local`` at the local
    model, as the current directory and the default runtime's project; an agent in it."""
    (tmp_path / "loom.toml").write_text(TOML.format(base_url=smollm2.base_url, model=smollm2.model))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOOM_PROJECT", str(tmp_path / "loom.toml"))
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    Runtime.set_default(None)
    runtime = Runtime.default()
    agent = Agent(agent_id="seed-user", topics=["tasks"])
    await agent.start()
    try:
        yield agent
    finally:
        await runtime.stop(timeout=5)
        Runtime.set_default(None)


async def test_seed_overview_on_the_local_model(seed_project, smollm2, capsys):
    names = await run(SEED_OVERVIEW)
    response = names["response"]
    assert isinstance(response, LLMResponse)
    assert response.usage.completion_tokens > 0
    assert capsys.readouterr().out == response.content + "\n"
    llm = names["llm"]
    assert llm.name == "deepseek" and llm.base_url == smollm2.base_url
    await names["agent"].stop()


async def test_seed_usage_patterns(seed_project, capsys):
    ctx = seed_project.ctx
    llm = LLMProvider.from_name(ctx, "deepseek")
    names = await run(SEED_SIMPLE_CHAT, llm=llm)
    assert names["response"].usage["completion_tokens"] > 0
    assert capsys.readouterr().out == names["response"].content + "\n"

    names = await run(SEED_SYSTEM_PROMPTS, llm=llm)
    assert names["response"].finish_reason in ("stop", "length")

    await run(SEED_STREAMING, llm=llm)
    assert capsys.readouterr().out.strip()
    assert llm.usage.calls == 3


async def test_seed_from_config_and_cost(seed_project, capsys):
    ctx = seed_project.ctx
    names = await run(SEED_FROM_CONFIG, ctx=ctx, LLMProvider=LLMProvider)
    llm = names["llm"]
    assert names["config"].path == Path.cwd() / "loom.toml"
    assert llm.name == "deepseek" and llm.config.temperature == 0.7
    assert llm._api_key == KEY  # api_key_env was read

    names = await run(fill_messages(SEED_COST), llm=llm, estimate_cost=llm.estimate_cost)
    out = capsys.readouterr().out.splitlines()
    total = names["total_prompt_tokens"] + names["total_completion_tokens"]
    assert names["total_prompt_tokens"] > 0 and names["total_completion_tokens"] > 0
    assert out[0] == f"Total tokens: {total}"
    assert out[1].startswith("Estimated cost: $")
    await llm.aclose()


async def test_seed_parallel_calls(seed_project):
    ctx = seed_project.ctx
    llm1 = LLMProvider.from_name(ctx, "deepseek")
    llm2 = LLMProvider.from_name(ctx, "local")
    llm3 = llm1.with_options(temperature=0.0)
    names = await run(fill_messages(SEED_PARALLEL), llm1=llm1, llm2=llm2, llm3=llm3)
    responses = names["responses"]
    assert len(responses) == 3
    assert all(r.usage.completion_tokens > 0 for r in responses)
    assert [r.provider for r in responses] == ["deepseek", "local", "deepseek"]


async def test_seed_generate_with_system_on_the_local_model(seed_project):
    llm = LLMProvider.from_name(seed_project.ctx, "deepseek")
    text = await llm.generate("Name a colour.", system="Answer in one word.", timeout_ms=60000)
    assert isinstance(text, str) and text.strip()
    streamed = [p async for p in llm.generate_stream("Say hi.", system="Be brief.")]
    assert "".join(streamed).strip()


async def test_seed_pooling_snippet(fault_server):
    config = LLMConfig(base_url=fault_server.base_url, model="fake-model")
    names = await run(fill_messages(SEED_POOLING), ctx=None, config=config, LLMProvider=LLMProvider)
    assert len(fault_server.requests) == 100
    await names["llm"].aclose()


async def test_seed_config_types_and_custom_provider():
    names = await run(SEED_LLMCONFIG)
    assert names["config"].timeout == 30.0 and names["config"].max_tokens == 4096
    names = await run(SEED_TYPES)
    assert names["response"].usage["prompt_tokens"] == 10
    assert names["msg"].content == "Hello!"
    names = await run(SEED_CUSTOM, ctx=None)
    llm = names["llm"]
    assert llm.base_url == "https://my-llm.example.com/v1" and llm.model == "my-model-v1"
    await llm.aclose()

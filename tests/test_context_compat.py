"""The context's original call shapes (issue 15): ``timeout_ms=`` on ``ctx.tool`` and
``ctx.request``, ``ctx.tool(headers=...)``, ``emit(envelope=...)``, ``ctx.reply`` to an
event that was emitted rather than requested, and ``Agent(address=...)``.

Written the way code for the original Loom calls these; each test fails on the build
before the compatibility layer (a ``TypeError`` or a ``LoomError``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from loom import Agent, Envelope, LoomError, RequestTimeout, Runtime, ToolTimeout
from loom.tools import current_call, tool


@pytest.fixture
async def rt() -> Any:
    runtime = Runtime()
    yield runtime
    await runtime.stop()


async def test_tool_timeout_ms_is_milliseconds(rt: Runtime) -> None:
    @tool("compat:sleepy")
    async def sleepy(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke"

    agent = Agent("caller", tools=[sleepy], runtime=rt)
    await agent.start()
    assert await agent.ctx.tool("compat:sleepy", {"seconds": 0.01}, timeout_ms=5000) == "woke"
    started = time.monotonic()
    with pytest.raises(ToolTimeout) as err:
        await agent.ctx.tool("compat:sleepy", {"seconds": 5}, timeout_ms=200)
    elapsed = time.monotonic() - started
    # 200 ms, not 200 s: the registry's grace is 1 s on top.
    assert elapsed < 2.5, elapsed
    assert "0.2s" in str(err.value)


async def test_timeout_and_timeout_ms_together_is_an_error(rt: Runtime) -> None:
    agent = Agent("caller", runtime=rt)
    await agent.start()
    with pytest.raises(TypeError, match="not both"):
        await agent.ctx.tool("fs:list_dir", {"path": "."}, timeout=1, timeout_ms=1000)
    with pytest.raises(TypeError, match="not both"):
        await agent.ctx.request("nobody", timeout=1, timeout_ms=1000)
    with pytest.raises(ValueError, match="positive"):
        await agent.ctx.request("nobody", timeout_ms=-5)


async def test_request_timeout_ms(rt: Runtime) -> None:
    async def slow(ctx: Any, topic: str, event: Envelope) -> None:
        await asyncio.sleep(float(event.payload))
        await ctx.reply(event, payload="late")

    server = Agent("slow", topics=["slow.req"], on_event=slow, runtime=rt)
    client = Agent("client", runtime=rt)
    await server.start()
    await client.start()
    reply = await client.ctx.request("slow.req", payload=0.01, timeout_ms=5000)
    assert reply.payload == "late"
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        await client.ctx.request("slow.req", payload=3, timeout_ms=150)
    assert time.monotonic() - started < 1.5


async def test_tool_headers_reach_a_python_tool_with_the_call_id(rt: Runtime) -> None:
    seen: list[Any] = []

    @tool("compat:whoami")
    async def whoami() -> dict[str, Any]:
        call = current_call()
        seen.append(call)
        assert call is not None
        return {"tenant": call.headers.get("x-tenant"), "call_id": call.call_id}

    @tool("compat:echo_header")
    async def echo_header(delay: float) -> str | None:
        await asyncio.sleep(delay)
        call = current_call()
        return call.headers.get("n") if call else None

    agent = Agent("caller", tools=[whoami, echo_header], runtime=rt)
    await agent.start()
    out = await agent.ctx.tool("compat:whoami", {}, headers={"x-tenant": "acme"}, call_id="c-1")
    assert out == {"tenant": "acme", "call_id": "c-1"}
    out2 = await agent.ctx.tool("compat:whoami")
    assert out2["tenant"] is None and out2["call_id"] and out2["call_id"] != "c-1"
    assert seen[0].agent_id == "caller" and seen[0].tool == "compat:whoami"
    # Outside a call there is none, and concurrent calls each see their own.
    assert current_call() is None

    results = await asyncio.gather(
        *(
            agent.ctx.tool("compat:echo_header", {"delay": 0.05 - i / 100}, headers={"n": str(i)})
            for i in range(4)
        )
    )
    assert results == ["0", "1", "2", "3"]


async def test_a_sync_tool_sees_the_call_in_its_thread(rt: Runtime) -> None:
    @tool("compat:sync_whoami")
    def sync_whoami() -> str | None:
        call = current_call()
        return call.headers.get("k") if call else None

    agent = Agent("caller", tools=[sync_whoami], runtime=rt)
    await agent.start()
    assert await agent.ctx.tool("compat:sync_whoami", headers={"k": "v"}) == "v"


async def test_emit_envelope_forwards_an_event(rt: Runtime) -> None:
    got: asyncio.Queue[Envelope] = asyncio.Queue()

    async def forward(ctx: Any, topic: str, event: Envelope) -> None:
        await ctx.emit("audit.copy", envelope=event)

    async def audit(ctx: Any, topic: str, event: Envelope) -> None:
        await got.put(event)

    fwd = Agent("forwarder", topics=["orders.new"], on_event=forward, runtime=rt)
    sink = Agent("audit", topics=["audit.copy"], on_event=audit, runtime=rt)
    src = Agent("shop", runtime=rt)
    for a in (fwd, sink, src):
        await a.start()
    await src.ctx.emit(
        "orders.new", "order", {"id": 7}, thread_id="t-9", headers={"x-trace-me": "yes"}
    )
    copy = await asyncio.wait_for(got.get(), 5)
    assert copy.topic == "audit.copy"
    assert (copy.type, copy.payload, copy.thread_id) == ("order", {"id": 7}, "t-9")
    assert copy.headers.get("x-trace-me") == "yes"
    assert copy.source == "forwarder"

    with pytest.raises(TypeError, match="envelope"):
        await src.ctx.emit("audit.copy", payload={"x": 1}, envelope=copy)


async def test_reply_to_an_emitted_event_answers_the_sender(rt: Runtime) -> None:
    answers: asyncio.Queue[Envelope] = asyncio.Queue()

    async def worker(ctx: Any, topic: str, event: Envelope) -> None:
        await ctx.reply(event, "done", {"for": event.payload})

    async def boss(ctx: Any, topic: str, event: Envelope) -> None:
        await answers.put(event)

    w = Agent("worker", topics=["jobs"], on_event=worker, runtime=rt)
    b = Agent("boss", topics=["boss.unused"], on_event=boss, runtime=rt)
    await w.start()
    await b.start()
    await b.ctx.emit("jobs", "job", "job-1")  # emitted, not requested: no reply_to
    answer = await asyncio.wait_for(answers.get(), 5)
    assert (answer.type, answer.payload, answer.source) == ("done", {"for": "job-1"}, "worker")
    assert answer.correlation_id is not None


async def test_reply_to_an_unknown_sender_is_a_clear_error(rt: Runtime) -> None:
    agent = Agent("replier", runtime=rt)
    await agent.start()
    stray = Envelope("jobs", "job", None, source="someone-elsewhere")
    with pytest.raises(LoomError, match=r"someone-elsewhere.*no agent of this runtime"):
        await agent.ctx.reply(stray, payload="x")


def test_agent_address_is_accepted_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="no bridge"):
        agent = Agent("legacy", topics=["x"], address="127.0.0.1:50051", runtime=Runtime())
    assert agent.agent_id == "legacy"


def test_kv_errors_are_exported_from_loom() -> None:
    import loom

    for name in ("KVError", "KeyExistsError", "KVConflictError", "InvalidKeyError"):
        assert issubclass(getattr(loom, name), loom.LoomError)

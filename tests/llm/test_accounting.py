"""Limits, usage, cost, budgets and the response cache."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import completion, respond, sse, text_chunks
from loom.llm import BudgetExceeded, LLMState, Pricing, Usage
from loom.llm.cost import cost_of, price_for
from loom.llm.limits import TokenBucket

MSG = [{"role": "user", "content": "hi"}]


# -- limits ---------------------------------------------------------------------------------


async def test_concurrency_cap_shared_by_providers(fault_server, make_provider):
    fault_server.default = respond(delay=0.1)
    shared = LLMState()  # what one runtime's providers share
    a = make_provider(name="shared", max_concurrency=2, state=shared)
    b = make_provider(name="shared", max_concurrency=2, state=shared)
    await asyncio.gather(*[p.call(MSG) for p in (a, b) for _ in range(4)])
    assert fault_server.max_in_flight == 2
    assert len(fault_server.requests) == 8


async def test_no_cap_runs_in_parallel(fault_server, make_provider):
    fault_server.default = respond(delay=0.1)
    llm = make_provider(name="free")
    await asyncio.gather(*[llm.call(MSG) for _ in range(6)])
    assert fault_server.max_in_flight == 6


def test_token_bucket_waits_when_empty():
    b = TokenBucket(60)  # 1 per second
    assert b.reserve(60) == 0.0
    wait = b.reserve(1)
    assert 0.9 < wait <= 1.01
    b.settle(-1)  # the call used less than reserved
    assert b.reserve(0) == 0.0


async def test_rpm_limit_delays_requests(fault_server, make_provider):
    llm = make_provider(name="rpm", rpm=120)  # 2 per second, bucket of 120
    limiter = llm.state.limiters.limiter(
        "rpm", fault_server.base_url.rstrip("/"), rpm=120, tpm=None, max_concurrency=None
    )
    assert limiter is not None and limiter.rpm is not None
    limiter.rpm.level = 1  # nearly empty: the second call must wait ~0.5 s
    t0 = time.monotonic()
    await llm.call(MSG)
    await llm.call(MSG)
    assert time.monotonic() - t0 >= 0.4


async def test_tpm_settles_with_real_usage(fault_server, make_provider):
    llm = make_provider(name="tpm", tpm=100_000, max_tokens=1000)
    await llm.call(MSG)
    lim = llm.state.limiters.limiter(
        "tpm", fault_server.base_url.rstrip("/"), rpm=None, tpm=100_000, max_concurrency=None
    )
    assert lim is not None and lim.tpm is not None
    # Reserved ~1001 tokens, the server reported 10: the bucket got the difference back.
    assert lim.tpm.level > 100_000 - 50


# -- usage and cost ------------------------------------------------------------------------


def test_price_table_and_prefix_match():
    assert price_for("gpt-4o-mini-2024-07-18").input == 0.15
    assert price_for("unknown-model").input == 0.0
    assert price_for("gpt-4o", Pricing(input=1, output=2)).output == 2


def test_cost_with_cached_tokens():
    u = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, cached_tokens=500_000)
    assert cost_of(u, Pricing(input=2.0, output=8.0, cached_input=0.5)) == pytest.approx(
        1.0 + 0.25 + 8.0
    )


async def test_usage_cost_per_provider_and_agent(fault_server, make_provider):
    class Ctx:
        agent_id = "researcher"
        project = None

    fault_server.default = respond(
        200,
        completion(
            usage={
                "prompt_tokens": 1000,
                "completion_tokens": 500,
                "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 200},
            }
        ),
    )
    llm = make_provider(
        name="priced", ctx=Ctx(), prices={"input": 1.0, "output": 2.0, "cached_input": 0.1}
    )
    r = await llm.call(MSG)
    assert r.usage.cached_tokens == 200
    assert r.cost_usd == pytest.approx((800 * 1.0 + 200 * 0.1 + 500 * 2.0) / 1e6)
    await llm.call(MSG)
    assert llm.usage.calls == 2 and llm.usage.usage.prompt_tokens == 2000
    assert llm.state.usage.agent("researcher").cost_usd == pytest.approx(2 * r.cost_usd)
    assert llm.estimate_cost(1_000_000, 0) == pytest.approx(1.0)
    assert llm.count_tokens("abcdefgh") == 2


async def test_stream_usage_recorded(fault_server, make_provider):
    fault_server.push(sse(text_chunks(["a", "b"])))
    llm = make_provider(name="su", quirks="openai")
    [_ async for _ in llm.stream(MSG)]
    assert llm.usage.usage.completion_tokens == 2 and llm.usage.calls == 1


async def test_budget_exceeded_sends_nothing(fault_server, make_provider):
    fault_server.default = respond(
        200,
        completion(
            usage={"prompt_tokens": 1_000_000, "completion_tokens": 0, "total_tokens": 1_000_000}
        ),
    )
    llm = make_provider(name="budget", prices={"input": 1.0, "output": 1.0}, budget_usd=0.5)
    await llm.call(MSG)  # spends $1
    with pytest.raises(BudgetExceeded) as ei:
        await llm.call(MSG)
    assert ei.value.spent_usd == pytest.approx(1.0) and ei.value.budget_usd == 0.5
    with pytest.raises(BudgetExceeded):
        async for _ in llm.stream(MSG):
            pass
    assert len(fault_server.requests) == 1


# -- cache ---------------------------------------------------------------------------------


async def test_cache_off_by_default(fault_server, make_provider):
    llm = make_provider()
    await llm.call(MSG)
    await llm.call(MSG)
    assert len(fault_server.requests) == 2


async def test_memory_cache_keyed_by_full_request(fault_server, make_provider):
    llm = make_provider(cache="memory")
    a = await llm.call(MSG)
    b = await llm.call(MSG)
    assert (a.cached, b.cached, b.content) == (False, True, a.content)
    await llm.call(MSG, temperature=0.3)  # a different request
    assert len(fault_server.requests) == 2
    # A cache hit can serve a stream too (replayed as events).
    assert "".join([p async for p in llm.stream(MSG)]) == "hello"
    assert len(fault_server.requests) == 2


async def test_disk_cache_survives_provider_and_expires(fault_server, make_provider, tmp_path):
    d = tmp_path / "cache"
    await make_provider(cache="disk", cache_dir=str(d)).call(MSG)
    assert len(list(d.glob("*.json"))) == 1
    r = await make_provider(cache="disk", cache_dir=str(d)).call(MSG)
    assert r.cached and len(fault_server.requests) == 1
    short = make_provider(cache="disk", cache_dir=str(d), cache_ttl=0.05)
    await asyncio.sleep(0.1)
    r = await short.call(MSG)
    assert not r.cached and len(fault_server.requests) == 2


async def test_cached_calls_cost_nothing_more(fault_server, make_provider):
    llm = make_provider(name="c", cache="memory", prices={"input": 1, "output": 1})
    await llm.call(MSG)
    await llm.call(MSG)
    assert llm.usage.calls == 1

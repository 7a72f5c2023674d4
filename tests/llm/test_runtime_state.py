"""Two runtimes in one process keep their own LLM state: budgets, limiters, usage
totals and local model servers (issue 10, goal 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import FaultServer, completion, respond
from loom import Agent, Runtime
from loom.config import load_project_config
from loom.llm import BudgetExceeded, LLMHost, LLMProvider, LLMState
from loom.llm.local_server import unavailable_reason

MSG = [{"role": "user", "content": "hi"}]

TOML = """\
[project]
name = "{name}"

[llm.x]
base_url = "{base_url}"
model = "fake-model"
prices = {{ input = 1.0, output = 1.0 }}
budget_usd = {budget}
max_concurrency = {concurrency}
"""

#: One call's usage: $1 at the prices above.
MILLION = {"prompt_tokens": 1_000_000, "completion_tokens": 0, "total_tokens": 1_000_000}


def _runtime(tmp_path: Path, name: str, base_url: str, budget: float, concurrency: int) -> Runtime:
    d = tmp_path / name
    d.mkdir()
    (d / "loom.toml").write_text(
        TOML.format(name=name, base_url=base_url, budget=budget, concurrency=concurrency)
    )
    return Runtime(load_project_config(d / "loom.toml"))


async def test_two_runtimes_have_independent_budgets_limits_and_totals(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.default = respond(200, completion(usage=MILLION), delay=0.1)
    a = _runtime(tmp_path, "a", fault_server.base_url, budget=0.5, concurrency=1)
    b = _runtime(tmp_path, "b", fault_server.base_url, budget=100.0, concurrency=3)
    assert isinstance(a, LLMHost) and a.llm_state is not b.llm_state
    llm_a = LLMProvider.from_name(Agent(agent_id="writer", topics=["t"], runtime=a).ctx, "x")
    llm_b = LLMProvider.from_name(Agent(agent_id="writer", topics=["t"], runtime=b).ctx, "x")
    assert llm_a.state is a.llm_state and llm_b.state is b.llm_state

    # Limiters: same provider name and endpoint, each runtime's own cap.
    await asyncio.gather(*(llm_b.call(MSG) for _ in range(3)))
    assert fault_server.max_in_flight == 3  # b is not held to a's max_concurrency = 1
    fault_server.max_in_flight = 0
    await asyncio.gather(*(llm_a.call(MSG) for _ in range(2)))
    assert fault_server.max_in_flight == 1
    key = ("x", fault_server.base_url.rstrip("/"))
    lim_a = a.llm_state.limiters.limiter(*key, rpm=None, tpm=None, max_concurrency=1)
    lim_b = b.llm_state.limiters.limiter(*key, rpm=None, tpm=None, max_concurrency=3)
    assert lim_a is not None and lim_b is not None and lim_a is not lim_b
    assert (lim_a.max_concurrency, lim_b.max_concurrency) == (1, 3)

    # Usage totals, per provider and per agent, each runtime's own.
    assert a.llm_state.usage.provider("x").calls == 2
    assert b.llm_state.usage.provider("x").calls == 3
    assert a.llm_state.usage.agent("writer").cost_usd == pytest.approx(2.0)
    assert b.llm_state.usage.agent("writer").cost_usd == pytest.approx(3.0)
    assert llm_a.usage.calls == 2 and llm_b.usage.calls == 3

    # Budgets: a has spent its $0.50; b, which spent more, has not spent its $100.
    with pytest.raises(BudgetExceeded):
        await llm_a.call(MSG)
    await llm_b.call(MSG)
    assert b.llm_state.usage.total_cost() == pytest.approx(4.0)
    assert a.llm_state.usage.total_cost() == pytest.approx(2.0)

    await a.stop(timeout=5)
    await b.stop(timeout=5)


def test_a_provider_without_a_runtime_has_its_own_state() -> None:
    from loom.llm import LLMConfig

    config = LLMConfig(name="x", base_url="http://127.0.0.1:9/v1", rpm=10)
    one, two = LLMProvider(None, config), LLMProvider(None, config)
    assert one.state is not two.state
    # ... shared with its copies (and fallbacks), which count against the same limits.
    assert one.with_options(temperature=0.0).state is one.state


def test_local_server_pools_are_per_runtime() -> None:
    a, b = Runtime(), Runtime()
    assert isinstance(a.llm_state, LLMState) and a.llm_state is a.llm_state
    assert a.llm_state.local_servers is not b.llm_state.local_servers


SERVED = """\
[project]
name = "{name}"

[llm.small]
serve = "smollm2"
max_tokens = 2
"""


async def test_two_runtimes_serve_their_own_local_model(tmp_path: Path) -> None:
    """Real llama.cpp servers: one per runtime, shared by that runtime's providers, and
    stopped with it."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    runtimes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "loom.toml").write_text(SERVED.format(name=name))
        runtimes.append(Runtime(load_project_config(tmp_path / name / "loom.toml")))
    a, b = runtimes
    ctx_a = Agent(agent_id="one", topics=["t"], runtime=a).ctx
    ctx_b = Agent(agent_id="one", topics=["t"], runtime=b).ctx
    a1, a2 = LLMProvider.from_name(ctx_a, "small"), LLMProvider.from_name(ctx_a, "small")
    b1 = LLMProvider.from_name(ctx_b, "small")
    await asyncio.gather(a1.call(MSG), a2.call(MSG), b1.call(MSG))
    [server_a] = a.llm_state.local_servers.running()
    [server_b] = b.llm_state.local_servers.running()
    assert server_a is not server_b and server_a.port != server_b.port
    assert a1.base_url == a2.base_url == server_a.base_url != b1.base_url
    await a.stop(timeout=10)
    assert not server_a.running and server_b.running
    assert a.llm_state.local_servers.running() == []
    await b.stop(timeout=10)
    assert not server_b.running

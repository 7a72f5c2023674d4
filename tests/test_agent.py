"""Agents and agent.ctx end to end on the real bus."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loom import Agent, AgentError, Envelope, LoomError, RequestTimeout, Runtime


async def echo(ctx, topic, event):  # type: ignore[no-untyped-def]
    await ctx.reply(event, payload={"echo": event.payload, "by": ctx.agent_id})


async def test_emit_and_handle(runtime: Runtime) -> None:
    seen: list[tuple[str, object]] = []

    async def on_event(ctx, topic, event):  # type: ignore[no-untyped-def]
        seen.append((topic, event.payload))

    async with Agent("sink", topics=["orders.*"], on_event=on_event), Agent("src") as src:
        await src.ctx.emit("orders.new", type="order", payload={"id": 1})
        await src.ctx.emit("orders.new.extra", payload="not matched")
        await src.ctx.emit("orders.paid", payload={"id": 1})
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
    assert seen == [("orders.new", {"id": 1}), ("orders.paid", {"id": 1})]


async def test_request_reply(runtime: Runtime) -> None:
    async with Agent("echo", topics=["echo"], on_event=echo), Agent("client") as c:
        reply = await c.ctx.request("echo", payload=42, timeout=2)
    assert reply.payload == {"echo": 42, "by": "echo"}
    assert reply.type == "reply" and reply.source == "echo"


async def test_request_inside_a_handler(runtime: Runtime) -> None:
    """A handler awaiting a request must not deadlock its agent (handlers run
    concurrently and replies arrive on the inbox)."""

    async def middle(ctx, topic, event):  # type: ignore[no-untyped-def]
        inner = await ctx.request("echo", payload=event.payload * 2, timeout=2)
        await ctx.reply(event, payload={"via": ctx.agent_id, "inner": inner.payload})

    async with (
        Agent("echo", topics=["echo"], on_event=echo),
        Agent("middle", topics=["middle"], on_event=middle, max_concurrency=1),
        Agent("client") as c,
    ):
        results = await asyncio.gather(
            *(c.ctx.request("middle", payload=i, timeout=3) for i in range(5))
        )
    assert [r.payload["inner"]["echo"] for r in results] == [0, 2, 4, 6, 8]


async def test_request_timeout_is_typed(runtime: Runtime) -> None:
    async with Agent("client") as c:
        start = time.monotonic()
        with pytest.raises(RequestTimeout, match="no reply") as info:
            await c.ctx.request("nobody.home", timeout=0.2)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, LoomError)
    assert 0.19 <= time.monotonic() - start < 1.5


async def test_handlers_run_concurrently_up_to_the_bound(runtime: Runtime) -> None:
    running = 0
    peak = 0

    async def slow(ctx, topic, event):  # type: ignore[no-untyped-def]
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        await ctx.reply(event, payload=event.payload)

    async with Agent("slow", topics=["work"], on_event=slow, max_concurrency=4), Agent("c") as c:
        start = time.monotonic()
        await asyncio.gather(*(c.ctx.request("work", payload=i, timeout=5) for i in range(12)))
        elapsed = time.monotonic() - start
    assert peak == 4
    assert elapsed < 0.6, f"12 x 50ms with 4 at a time should take ~150ms, took {elapsed:.3f}s"


async def test_handler_exception_is_logged_and_agent_keeps_going(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    async def flaky(ctx, topic, event):  # type: ignore[no-untyped-def]
        if event.payload == "boom":
            raise RuntimeError("kaboom")
        await ctx.reply(event, payload="ok")

    caplog.set_level(logging.ERROR, logger="loom.agent")
    async with Agent("flaky", topics=["f"], on_event=flaky), Agent("c") as c:
        await c.ctx.emit("f", payload="boom")
        reply = await c.ctx.request("f", payload="fine", timeout=2)
    assert reply.payload == "ok"
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failures) == 1
    msg = failures[0].getMessage()
    assert "flaky" in msg and "topic f" in msg
    assert failures[0].exc_info and "kaboom" in str(failures[0].exc_info[1])


async def test_graceful_stop_finishes_in_flight_and_queued_events(runtime: Runtime) -> None:
    done: list[int] = []

    async def work(ctx, topic, event):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.05)
        done.append(event.payload)

    agent = Agent("w", topics=["w"], on_event=work, max_concurrency=2)
    await agent.start()
    src = Agent("src")
    await src.start()
    for i in range(6):
        await src.ctx.emit("w", payload=i)
    await asyncio.sleep(0.01)  # some in flight, some queued
    await agent.stop(timeout=5)
    assert sorted(done) == list(range(6))
    assert not agent.running


async def test_stop_timeout_cancels_stuck_handlers(runtime: Runtime) -> None:
    cancelled = asyncio.Event()

    async def stuck(ctx, topic, event):  # type: ignore[no-untyped-def]
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    agent = Agent("stuck", topics=["s"], on_event=stuck)
    await agent.start()
    await runtime.bus.publish("s")
    await asyncio.sleep(0.02)
    start = time.monotonic()
    await agent.stop(timeout=0.2)
    assert time.monotonic() - start < 2
    assert cancelled.is_set()


async def test_ctx_subscribe_unsubscribe_and_config(runtime: Runtime) -> None:
    got: list[str] = []

    async def h(ctx, topic, event):  # type: ignore[no-untyped-def]
        got.append(f"{ctx.config['tag']}:{topic}")

    async with Agent("a", config={"tag": "T"}) as a:
        sub = a.ctx.subscribe("x.*", h)
        await a.ctx.emit("x.1")
        await asyncio.sleep(0.05)
        assert await a.ctx.unsubscribe(sub) == 1
        await a.ctx.emit("x.2")
        await asyncio.sleep(0.05)
    assert got == ["T:x.1"]


async def test_batch_handler_gets_lists(runtime: Runtime) -> None:
    batches: list[list[int]] = []

    async def on_batch(ctx, pattern, events):  # type: ignore[no-untyped-def]
        batches.append([e.payload for e in events])

    async with Agent("b", topics=["b"], on_batch=on_batch, qos="background"):
        for i in range(500):
            runtime.bus.publish_nowait("b", payload=i)
        for _ in range(100):
            if sum(map(len, batches)) == 500:
                break
            await asyncio.sleep(0.01)
    assert [x for b in batches for x in b] == list(range(500))
    assert len(batches) < 500  # delivered in batches, not one by one


async def test_direct_message_to_inbox_reaches_on_event(runtime: Runtime) -> None:
    got: list[Envelope] = []

    async def h(ctx, topic, event):  # type: ignore[no-untyped-def]
        got.append(event)

    async with Agent("target", on_event=h) as t, Agent("src") as s:
        await s.ctx.emit(t.ctx.inbox, "direct", "hi")
        await asyncio.sleep(0.05)
    assert [e.payload for e in got] == ["hi"]


async def test_reply_without_reply_to_is_a_clear_error(runtime: Runtime) -> None:
    async with Agent("a") as a:
        with pytest.raises(LoomError, match="no reply_to"):
            await a.ctx.reply(Envelope("x"), payload=1)


async def test_duplicate_agent_ids_and_bad_args(runtime: Runtime) -> None:
    async with Agent("dup"):
        with pytest.raises(AgentError, match="already running"):
            await Agent("dup").start()
    with pytest.raises(AgentError):
        Agent("")
    with pytest.raises(LoomError):
        Agent("x", topics=["bad..topic"])


async def test_main_is_restarted_after_a_crash(runtime: Runtime) -> None:
    runs = 0
    finished = asyncio.Event()

    async def main(ctx):  # type: ignore[no-untyped-def]
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("crash")
        finished.set()

    agent = Agent("m", main=main, runtime=runtime)
    await agent.start()
    # Default backoff: 0.5 s, then 1 s.
    await asyncio.wait_for(finished.wait(), 5)
    assert runs == 3


async def test_many_agents_share_one_runtime(runtime: Runtime) -> None:
    agents = [Agent(f"a{i}", topics=["all"], on_event=echo) for i in range(20)]
    for a in agents:
        await a.start()
        assert a.runtime is runtime
    async with Agent("c") as c:
        replies = await c.ctx.gather("all", payload="ping", timeout=2)
    assert sorted(r.source for r in replies) == sorted(f"a{i}" for i in range(20))
    for a in agents:
        await a.stop()


def test_run_blocks_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from loom import Agent

            async def on_start(ctx):
                print("started", flush=True)

            async def on_stop(ctx):
                print("stopped cleanly", flush=True)

            Agent("solo", topics=["x"], on_event=lambda c, t, e: None,
                  on_start=on_start, on_stop=on_stop).run()
            print("run returned", flush=True)
            """
        )
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "stopped cleanly" in out and "run returned" in out


async def test_late_reply_to_a_timed_out_request_is_dropped(runtime: Runtime) -> None:
    direct: list[Envelope] = []

    async def slow(ctx, topic, event):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.3)
        await ctx.reply(event, payload="late")

    async def client_handler(ctx, topic, event):  # type: ignore[no-untyped-def]
        direct.append(event)

    async with (
        Agent("slow", topics=["slow"], on_event=slow),
        Agent("client", on_event=client_handler) as c,
    ):
        with pytest.raises(RequestTimeout):
            await c.ctx.request("slow", timeout=0.1)
        await asyncio.sleep(0.4)
        # A genuine direct message still arrives.
        await runtime.bus.publish(c.ctx.inbox, "direct", "hello")
        await asyncio.sleep(0.05)
    assert [e.payload for e in direct] == ["hello"]


async def test_queue_group_shares_work_between_agents(runtime: Runtime) -> None:
    handled: dict[str, int] = {"w1": 0, "w2": 0}

    async def work(ctx, topic, event):  # type: ignore[no-untyped-def]
        handled[ctx.agent_id] += 1
        await asyncio.sleep(0.01)
        await ctx.reply(event, payload=ctx.agent_id)

    async with (
        Agent("w1", topics=["jobs"], on_event=work, group="pool"),
        Agent("w2", topics=["jobs"], on_event=work, group="pool"),
        Agent("c") as c,
    ):
        replies = await asyncio.gather(
            *(c.ctx.request("jobs", payload=i, timeout=5) for i in range(40))
        )
        # Each request was handled exactly once (by one member of the group).
        assert sum(handled.values()) == 40
        assert handled["w1"] >= 10 and handled["w2"] >= 10, handled
        assert {r.payload for r in replies} == {"w1", "w2"}
        subs = [s for s in runtime.bus.stats().subscriptions if s.pattern == "jobs"]
        assert {s.group for s in subs} == {"pool"}


async def test_a_slow_handler_does_not_delay_the_next_event(runtime: Runtime) -> None:
    """Events arriving one by one while a handler is busy start at once (another worker
    is watching the queue), they do not wait for the busy one."""
    started: dict[int, float] = {}

    async def slow(ctx, topic, event):  # type: ignore[no-untyped-def]
        started[event.payload] = time.monotonic()
        await asyncio.sleep(0.5)

    async with Agent("slow", topics=["s"], on_event=slow, max_concurrency=4), Agent("c") as c:
        t0 = time.monotonic()
        for i in range(3):
            await c.ctx.emit("s", payload=i)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        assert sorted(started) == [0, 1, 2]
        assert max(started.values()) - t0 < 0.4, "each started while the others slept"


async def test_max_concurrency_is_shared_by_an_agents_subscriptions_and_freed_when_idle(
    runtime: Runtime,
) -> None:
    """A worker keeps its limiter slot from one handler to the next only while nobody
    waits for it: two subscriptions of a max_concurrency=1 agent never run handlers at
    once, both are served, and the slot is free again once the queues are empty."""
    running = 0
    peak = 0
    seen: list[tuple[str, int]] = []

    async def handler(ctx, topic, event):  # type: ignore[no-untyped-def]
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)  # suspends while holding the slot
        seen.append((topic, event.payload))
        running -= 1

    agent = Agent("one", topics=["a", "b"], on_event=handler, max_concurrency=1)
    async with agent, Agent("src") as src:
        for i in range(20):
            await src.ctx.emit("a", payload=i)
            await src.ctx.emit("b", payload=i)
        for _ in range(200):
            if len(seen) == 40:
                break
            await asyncio.sleep(0.01)
        assert peak == 1
        assert sorted(seen) == sorted([("a", i) for i in range(20)] + [("b", i) for i in range(20)])
        # In order per subscription.
        assert [p for t, p in seen if t == "a"] == list(range(20))
        assert [p for t, p in seen if t == "b"] == list(range(20))
        assert agent.ctx._limiter.free == 1  # released when the workers went idle

"""``ctx.emit``'s fast path (publish at the call, a finished awaitable) against the full
path (``_emit``), and the awaitable's contract."""

from __future__ import annotations

import asyncio
import collections.abc
import gc
import time
import warnings
from typing import Any

import pytest

from loom import Agent, BusFullError, Envelope, InvalidTopicError, Runtime
from loom.bus import DEFAULT_PUBLISH_TIMEOUT, DEFAULT_TTL, DONE

FIELDS = ("topic", "type", "payload", "source", "correlation_id", "reply_to", "thread_id")


def fields(e: Envelope) -> tuple[Any, ...]:
    return (*(getattr(e, f) for f in FIELDS), e.ttl, e.headers)


async def test_fast_path_publishes_what_the_full_path_does(runtime: Runtime) -> None:
    watch = runtime.bus.subscribe("t.>", qos="realtime", capacity=100)
    async with Agent("src") as src:
        ctx = src.ctx
        calls: list[dict[str, Any]] = [
            {},
            {"type": "order", "payload": {"id": 1}},
            {"correlation_id": "c1", "reply_to": "r.x", "thread_id": "th"},
            {"headers": {"k": "v", "x-a": "1"}, "ttl": 3},
            {"payload": b"raw", "type": "bytes"},
        ]
        for kw in calls:
            # The fast path: no forwarding, tracing, durable run or JetStream.
            assert ctx.emit("t.fast", **kw) is DONE
            full = {"type": "event", "payload": None, "correlation_id": None,
                    "reply_to": None, "thread_id": None, "headers": None,
                    "ttl": DEFAULT_TTL, "timeout": DEFAULT_PUBLISH_TIMEOUT,
                    "envelope": None, **kw}  # fmt: skip
            await ctx._emit("t.fast", **full)
        got = watch.take(100)
    assert len(got) == 2 * len(calls)
    for fast, slow in zip(got[::2], got[1::2], strict=True):
        assert fields(fast) == fields(slow)
        assert fast.id != slow.id
    assert got[0].source == "src"


async def test_positional_arguments_mean_the_keywords(runtime: Runtime) -> None:
    watch = runtime.bus.subscribe("p", qos="realtime", capacity=10)
    async with Agent("src") as src:
        await src.ctx.emit("p", "kind", {"a": 1}, "corr", "reply.t", "thr", {"h": "1"}, 5)
        await src.ctx.emit(
            "p", "kind", {"a": 1}, correlation_id="corr", reply_to="reply.t",
            thread_id="thr", headers={"h": "1"}, ttl=5,
        )  # fmt: skip
        a, b = watch.take(10)
    assert fields(a) == fields(b)
    assert (a.correlation_id, a.reply_to, a.thread_id, a.ttl, a.headers) == (
        "corr", "reply.t", "thr", 5, {"h": "1"},
    )  # fmt: skip


async def test_the_finished_awaitable_works_wherever_a_coroutine_does(runtime: Runtime) -> None:
    watch = runtime.bus.subscribe("c", qos="realtime", capacity=10)
    async with Agent("src") as src:
        emit = src.ctx.emit
        assert await emit("c", payload=1) is None
        assert await asyncio.create_task(emit("c", payload=2)) is None
        assert await asyncio.gather(emit("c", payload=3), emit("c", payload=4)) == [None, None]
        assert await asyncio.wait_for(emit("c", payload=5), 1) is None
        assert [e.payload for e in watch.take(10)] == [1, 2, 3, 4, 5]
    assert asyncio.iscoroutine(DONE) and isinstance(DONE, collections.abc.Coroutine)
    for _ in range(3):
        assert await DONE is None  # any number of times
    with pytest.raises(StopIteration):
        DONE.send(None)
    with pytest.raises(ValueError, match="boom"):
        DONE.throw(ValueError("boom"))
    with pytest.raises(KeyError):
        DONE.throw(KeyError)
    assert repr(DONE) == "<loom._core.Done>"
    DONE.close()


def test_the_finished_awaitable_runs_under_asyncio_run() -> None:
    assert asyncio.run(DONE) is None  # type: ignore[arg-type]


async def test_an_invalid_topic_raises_from_the_call(runtime: Runtime) -> None:
    async with Agent("src") as src:
        with pytest.raises(InvalidTopicError):
            src.ctx.emit("bad..topic")
        with pytest.raises(InvalidTopicError):
            await src.ctx.emit("bad..topic")


async def test_a_forgotten_await_still_publishes_on_the_fast_path(runtime: Runtime) -> None:
    watch = runtime.bus.subscribe("f", qos="realtime", capacity=10)
    async with Agent("src") as src:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "never awaited" for a published event
            src.ctx.emit("f", payload="sent")
            gc.collect()
        assert [e.payload for e in watch.take(10)] == ["sent"]


async def test_the_full_path_still_runs_at_the_await(runtime: Runtime) -> None:
    watch = runtime.bus.subscribe("g.>", qos="realtime", capacity=10)
    async with Agent("src") as src:
        original = Envelope("g.in", "kind", payload={"x": 1})
        pending = src.ctx.emit("g.out", envelope=original)
        assert asyncio.iscoroutine(pending) and pending is not DONE
        assert watch.take(10) == []  # nothing yet: a coroutine runs when awaited
        await pending
        (e,) = watch.take(10)
    assert (e.topic, e.type, e.payload, e.source) == ("g.out", "kind", {"x": 1}, "src")


async def test_a_full_reliable_subscriber_makes_the_await_wait(runtime: Runtime) -> None:
    sub = runtime.bus.subscribe("r", qos="reliable", capacity=1)
    async with Agent("src") as src:
        assert src.ctx.emit("r", payload=0) is DONE
        pending = src.ctx.emit("r", payload=1, timeout=5)
        assert pending is not DONE

        async def drain_later() -> list[Any]:
            await asyncio.sleep(0.05)
            first = [e.payload for e in sub.take(10)]
            return first

        drained = asyncio.create_task(drain_later())
        start = time.monotonic()
        await pending  # waits for room, then delivers
        assert time.monotonic() - start >= 0.04
        assert await drained == [0]
        assert [e.payload for e in sub.take(10)] == [1]
        src.ctx.emit("r", payload=2)  # fills it again
        with pytest.raises(BusFullError, match="stayed full"):
            await src.ctx.emit("r", payload=3, timeout=0.05)
    assert sub.stats().dropped["timeout"] == 1


async def test_many_distinct_types_and_sources_keep_their_text(runtime: Runtime) -> None:
    # More distinct strings than the binding's string cache holds (two per set, 64 sets):
    # evictions must never hand an event another string's text.
    watch = runtime.bus.subscribe("s.>", qos="realtime", capacity=10_000)
    core = runtime.bus.core
    names = [f"kind-{i}" for i in range(300)]
    sources = [f"agent-{i}" for i in range(300)]
    topics = [f"s.t{i % 150}" for i in range(300)]
    for _ in range(3):
        for t, kind, source in zip(topics, names, sources, strict=True):
            assert core.publish(t, kind, None, source) is None
    got = watch.take(10_000)
    assert [(e.topic, e.type, e.source) for e in got] == 3 * list(
        zip(topics, names, sources, strict=True)
    )


async def test_a_handler_may_return_emit_without_awaiting_it(runtime: Runtime) -> None:
    # The dispatcher awaits what a handler returns if it is awaitable: the finished
    # awaitable and the full path's coroutine both count.
    watch = runtime.bus.subscribe("out.>", qos="realtime", capacity=10)
    done = asyncio.Event()

    def relay(ctx: Any, topic: str, event: Envelope) -> Any:
        if event.payload == "last":
            done.set()
        return ctx.emit("out.fast", payload=event.payload)

    async with Agent("relay", ["in"], on_event=relay), Agent("src") as src:
        await src.ctx.emit("in", payload=1)
        await src.ctx.emit("in", payload="last")
        await asyncio.wait_for(done.wait(), 5)
        for _ in range(100):
            if watch.depth == 2:
                break
            await asyncio.sleep(0.01)
    assert [e.payload for e in watch.take(10)] == [1, "last"]

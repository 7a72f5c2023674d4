"""The bus from Python: topics, QoS, stats, batched delivery, no loop blocking."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from loom import BusFullError, Envelope, EventBus, InvalidTopicError, LoomError, _core


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("", "empty"),
        ("a..b", "token 2 is empty"),
        ("a.", "token 2 is empty"),
        ("a b", "whitespace"),
        ("a.*", "wildcard"),
        ("a.>", "wildcard"),
    ],
)
async def test_invalid_publish_topics(topic: str, why: str) -> None:
    bus = EventBus()
    with pytest.raises(InvalidTopicError, match=why) as info:
        await bus.publish(topic)
    assert isinstance(info.value, LoomError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("pattern", ["a.>.b", "a*", "", "x..y"])
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(InvalidTopicError):
        EventBus().subscribe(pattern)


def test_unknown_qos_and_capacity() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="unknown qos"):
        bus.subscribe("a", qos="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capacity"):
        bus.subscribe("a", capacity=0)


async def test_wildcards_and_envelope_fields() -> None:
    bus = EventBus()
    star = bus.subscribe("market.price.*")
    rest = bus.subscribe("market.>")
    payload = {"px": 1.5, "tags": ["a"]}
    await bus.publish(
        "market.price.aapl",
        "tick",
        payload,
        source="feed",
        correlation_id="c1",
        reply_to="r.x",
        thread_id="t1",
        headers={"traceparent": "00-abc"},
    )
    await bus.publish("market.volume.aapl", "tick", 2)
    e = await star.get()
    assert (e.topic, e.type, e.source, e.correlation_id, e.reply_to, e.thread_id) == (
        "market.price.aapl",
        "tick",
        "feed",
        "c1",
        "r.x",
        "t1",
    )
    assert e.payload is payload  # in-process: passed by reference, not copied
    assert e.headers == {"traceparent": "00-abc"}
    assert abs(e.timestamp - time.time()) < 5
    assert len(e.id) == 36
    assert e.to_dict()["type"] == "tick"
    assert [x.topic for x in await rest.get_batch()] == ["market.price.aapl", "market.volume.aapl"]
    assert star.depth == 0


async def test_realtime_drops_oldest_and_stats() -> None:
    bus = EventBus()
    sub = bus.subscribe("t", qos="realtime", capacity=4)
    for i in range(10):
        await bus.publish("t", payload=i)
    assert sub.depth == 4
    assert [e.payload for e in sub.take(100)] == [6, 7, 8, 9]
    s = sub.stats()
    assert s.dropped["overflow_oldest"] == 6
    assert (s.enqueued, s.delivered, s.depth) == (10, 4, 0)
    t = bus.stats().topics["t"]
    assert (t.published, t.delivered, t.dropped, t.subscribers) == (10, 10, 6, 1)


async def test_background_drops_newest() -> None:
    bus = EventBus()
    sub = bus.subscribe("t", qos="background", capacity=3)
    for i in range(5):
        await bus.publish("t", payload=i)
    assert [e.payload for e in sub.take()] == [0, 1, 2]
    assert sub.stats().dropped["overflow_newest"] == 2


async def test_reliable_publisher_waits_then_raises_bus_full() -> None:
    bus = EventBus()
    slow = bus.subscribe("t", qos="reliable", capacity=1)
    other = bus.subscribe("t", qos="realtime", capacity=100)
    await bus.publish("t", payload=0)
    start = time.monotonic()
    with pytest.raises(BusFullError, match="stayed full"):
        await bus.publish("t", payload=1, timeout=0.2)
    assert time.monotonic() - start >= 0.19
    # The other subscriber was not held back, and the drop is counted.
    assert [e.payload for e in other.take()] == [0, 1]
    assert slow.stats().dropped["timeout"] == 1
    assert bus.stats().topics["t"].dropped == 1


async def test_reliable_publisher_resumes_when_consumer_catches_up() -> None:
    bus = EventBus()
    sub = bus.subscribe("t", qos="reliable", capacity=2)
    received: list[int] = []

    async def consumer() -> None:
        while len(received) < 50:
            e = await sub.get()
            received.append(e.payload)
            await asyncio.sleep(0.001)

    task = asyncio.create_task(consumer())
    for i in range(50):
        await bus.publish("t", payload=i, timeout=5)
    await asyncio.wait_for(task, 10)
    assert received == list(range(50))
    assert sub.stats().dropped["timeout"] == 0


async def test_get_waits_without_blocking_the_loop() -> None:
    bus = EventBus()
    sub = bus.subscribe("t")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.create_task(ticker())
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0.1)
    assert not waiter.done()
    assert ticks >= 10, "the loop kept running while the subscriber waited"
    await bus.publish("t", payload="x")
    assert (await asyncio.wait_for(waiter, 1)).payload == "x"
    t.cancel()


async def test_publish_from_another_thread_wakes_the_loop() -> None:
    bus = EventBus()
    sub = bus.subscribe("t")
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0.01)
    threading.Thread(target=lambda: bus.publish_nowait("t", payload="from-thread")).start()
    assert (await asyncio.wait_for(waiter, 2)).payload == "from-thread"


async def test_batched_delivery_takes_everything_pending() -> None:
    bus = EventBus()
    sub = bus.subscribe("t", qos="background")
    for i in range(1000):
        bus.publish_nowait("t", payload=i)
    batch = await sub.get_batch(max=10_000)
    assert [e.payload for e in batch] == list(range(1000))


async def test_async_iteration_ends_on_unsubscribe() -> None:
    bus = EventBus()
    sub = bus.subscribe("t")
    for i in range(3):
        await bus.publish("t", payload=i)
    sub.unsubscribe()
    assert [e.payload async for e in sub] == [0, 1, 2]
    assert sub.closed


async def test_cancelled_waiter_does_not_break_delivery() -> None:
    bus = EventBus()
    sub = bus.subscribe("t")
    w = asyncio.create_task(sub.get())
    await asyncio.sleep(0.01)
    w.cancel()
    await asyncio.sleep(0.01)
    await bus.publish("t", payload=1)  # fires the stale waker: must not raise
    assert (await asyncio.wait_for(sub.get(), 1)).payload == 1


def test_envelope_constructor_and_repr() -> None:
    e = Envelope("a.b", "t", {"k": 1}, source="me", ttl=3)
    assert e.ttl == 3 and e.payload == {"k": 1}
    assert "a.b" in repr(e) and "me" in repr(e)
    with pytest.raises(InvalidTopicError):
        Envelope("a.*")


def test_topic_helpers() -> None:
    assert _core.topic_matches("a.*.c", "a.b.c")
    assert not _core.topic_matches("a.*", "a.b.c")
    assert _core.topic_matches("a.>", "a.b.c")
    _core.validate_topic("a.b")
    with pytest.raises(InvalidTopicError):
        _core.validate_pattern("a.>.c")


async def test_hop_limit() -> None:
    bus = EventBus()
    with pytest.raises(LoomError, match="hop limit"):
        await bus.publish("t", ttl=0)


async def test_closed_bus() -> None:
    bus = EventBus()
    sub = bus.subscribe("t")
    bus.close()
    assert sub.closed
    with pytest.raises(LoomError, match="closed"):
        await bus.publish("t")


async def test_an_observer_is_neither_counted_nor_announced_to_watchers() -> None:
    from loom.bus import EventBus

    bus = EventBus()
    told: list[str] = []

    class Watcher:
        def subscribed(self, sub: Any) -> None:
            told.append(sub.pattern)

        def unsubscribed(self, sub: Any) -> None:
            told.append("-" + sub.pattern)

    bus.watch(Watcher())
    real = bus.subscribe("w.*", qos="reliable")
    watch = bus.observe(">", capacity=2)
    for i in range(4):
        await bus.publish("w.x", "t", i)
    assert told == ["w.*"]  # a NATS bridge would not import ">" for the observer
    assert [e.payload for e in watch.take(10)] == [0, 1]
    assert watch.stats().dropped["overflow_newest"] == 2
    topic = bus.stats().topics["w.x"]
    assert (topic.delivered, topic.dropped, topic.subscribers) == (4, 0, 1)
    assert len(real.take(10)) == 4
    with pytest.raises(ValueError):
        bus.observe(">", capacity=0)
    watch.unsubscribe()
    assert told == ["w.*"]


async def test_published_envelope_matches_the_constructors() -> None:
    """`Bus.publish` builds its envelope in place (not through `Envelope(...)`): every
    field must come out as the constructor makes it from the same arguments."""
    bus = _core.Bus()
    sub = bus.subscribe("a.b", "reliable", 8)
    args: dict[str, Any] = {
        "source": "me",
        "correlation_id": "c",
        "reply_to": "r.x",
        "thread_id": "t",
        "ttl": 7,
        "headers": {"k": "v", "traceparent": "00-x"},
    }
    before = time.time_ns()
    assert bus.publish("a.b", "t", [1], **args) is None
    bus.publish("a.b", "t", None)
    got, bare = sub.take(2)
    want = _core.Envelope("a.b", "t", got.payload, **args)
    fields = ("topic", "type", "payload", "source", "correlation_id", "reply_to")
    fields += ("thread_id", "ttl", "headers", "delivery_count")
    assert {f: getattr(got, f) for f in fields} == {f: getattr(want, f) for f in fields}
    assert before <= got.timestamp_ns <= time.time_ns()
    assert got.id != bare.id and len(got.id) == 36
    plain = _core.Envelope("a.b", "t", None)
    assert {f: getattr(bare, f) for f in fields} == {f: getattr(plain, f) for f in fields}
    # The constructor's own id and timestamp still win over the fresh ones.
    kept = _core.Envelope("a.b", id=got.id, timestamp_ns=5)
    assert (kept.id, kept.timestamp_ns) == (got.id, 5)

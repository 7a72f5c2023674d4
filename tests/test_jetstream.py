"""Reliable subscriptions over a real nats-server with JetStream (file storage):
stored events, durable consumers, ack after the handler, redelivery, dead letters,
publish acks and dedupe, queue groups across runtimes, traces across redeliveries."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom import Agent, BusError, Envelope, Runtime
from loom.nats import JetStreamLink, connect, enable_jetstream
from loom.nats.jetstream import consumer_name, storable, subject_covers
from loom.nats.settings import JetStreamSettings
from nats_servers import NatsServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    srv = NatsServer(jetstream=True, store=tmp_path_factory.mktemp("js")).start()
    yield srv
    srv.stop()


def settings(**kw: Any) -> JetStreamSettings:
    # A stream per test: tests do not see each other's events.
    tag = uuid.uuid4().hex[:10]
    kw.setdefault("stream", f"T{tag}")
    kw.setdefault("dlq_prefix", f"dlq{tag}")
    kw.setdefault("ack_wait", 2.0)
    kw.setdefault("backoff", [0.05])
    kw.setdefault("max_deliver", 3)
    return JetStreamSettings(**kw)


async def joined(
    url: str, js: JetStreamSettings, subjects: list[str] | None = None
) -> tuple[Runtime, JetStreamLink]:
    rt = Runtime()
    bridge = await connect(rt, url)
    link = await enable_jetstream(rt, bridge, js, subjects or [])
    return rt, link


@pytest.fixture
async def runtimes() -> AsyncIterator[list[Runtime]]:
    made: list[Runtime] = []
    yield made
    for rt in made:
        await rt.stop()


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# -- pure rules ---------------------------------------------------------------------


def test_subject_covers() -> None:
    assert subject_covers("a.>", "a.b")
    assert subject_covers("a.>", "a.b.>")
    assert subject_covers("a.*", "a.b")
    assert subject_covers("a.*", "a.*")
    assert subject_covers("a.b", "a.b")
    assert not subject_covers("a.>", "a")
    assert not subject_covers("a.*", "a.>")
    assert not subject_covers("a.*", "a.b.c")
    assert not subject_covers("a.b", "a.*")
    assert not subject_covers("a.b", "a.c")


def test_storable_refuses_system_and_wildcard_first_tokens() -> None:
    assert storable("orders.new") and storable("orders.>")
    for p in (">", "*.x", "_INBOX.abc.def", "$JS.API.>", "$SYS.x", "_loom.barrier.b"):
        assert not storable(p), p


def test_consumer_names_are_safe_and_distinct() -> None:
    a = consumer_name("workers", "orders.*")
    b = consumer_name("workers", "orders.>")
    assert a != b
    assert all(c.isalnum() or c in "_-" for c in a)
    assert consumer_name("workers", "orders.*") == a  # stable across processes


# -- delivery -------------------------------------------------------------------------


async def test_events_published_before_any_consumer_are_delivered(
    server: NatsServer, runtimes: list[Runtime]
) -> None:
    js = settings()
    pub_rt, pub_link = await joined(server.url, js, ["work.items"])
    runtimes.append(pub_rt)
    producer = Agent("producer", runtime=pub_rt)
    await producer.start()
    ids = []
    for i in range(20):
        await producer.ctx.emit("work.items", "item", {"n": i})
    assert pub_link.stats.published == 20

    got: list[Envelope] = []

    async def handle(ctx: Any, topic: str, event: Envelope) -> None:
        got.append(event)

    con_rt, _ = await joined(server.url, js)
    runtimes.append(con_rt)
    worker = Agent("worker", topics=["work.items"], on_event=handle, runtime=con_rt)
    await worker.start()
    await wait_for(lambda: len(got) == 20)
    assert sorted(e.payload["n"] for e in got) == list(range(20))
    assert all(e.delivery_count == 1 for e in got)
    assert all(e.source == "producer" for e in got)
    del ids


async def test_a_failing_handler_is_redelivered_with_the_same_id(
    server: NatsServer, runtimes: list[Runtime]
) -> None:
    rt, link = await joined(server.url, settings())
    runtimes.append(rt)
    seen: list[tuple[str, int]] = []

    async def flaky(ctx: Any, topic: str, event: Envelope) -> None:
        seen.append((event.id, event.delivery_count))
        if event.delivery_count < 2:
            raise RuntimeError("transient")

    worker = Agent("flaky", topics=["jobs.flaky"], on_event=flaky, runtime=rt)
    await worker.start()
    sender = Agent("sender", runtime=rt)
    await sender.start()
    await sender.ctx.emit("jobs.flaky", "job", {"x": 1})
    await wait_for(lambda: len(seen) >= 2)
    await wait_for(lambda: link.stats.acked == 1)
    (id1, n1), (id2, n2) = seen[:2]
    assert id1 == id2 and (n1, n2) == (1, 2)
    assert link.stats.redelivered >= 1 and link.stats.failed == 1
    await asyncio.sleep(0.3)
    assert len(seen) == 2  # acked after success: not delivered again


async def test_a_handler_that_always_fails_ends_in_the_dead_letter_subject(
    server: NatsServer, runtimes: list[Runtime]
) -> None:
    js = settings(max_deliver=3)
    rt, link = await joined(server.url, js)
    runtimes.append(rt)
    attempts: list[int] = []
    dead: list[Envelope] = []

    async def broken(ctx: Any, topic: str, event: Envelope) -> None:
        attempts.append(event.delivery_count)
        raise ValueError("cannot handle this order")

    async def morgue(ctx: Any, topic: str, event: Envelope) -> None:
        dead.append(event)

    await Agent("broken", topics=["orders.bad"], on_event=broken, runtime=rt).start()
    # The dead-letter subject is stored too: a reliable subscriber gets it.
    await Agent("morgue", topics=[f"{js.dlq_prefix}.>"], on_event=morgue, runtime=rt).start()
    sender = Agent("sender", runtime=rt)
    await sender.start()
    await sender.ctx.emit("orders.bad", "order", {"id": 42})
    await wait_for(lambda: len(dead) == 1)
    assert attempts == [1, 2, 3]
    letter = dead[0]
    assert letter.topic == f"{js.dlq_prefix}.orders.bad"
    assert letter.payload == {"id": 42}
    assert "ValueError: cannot handle this order" in letter.headers["Loom-Error"]
    assert letter.headers["Loom-Original-Topic"] == "orders.bad"
    assert link.stats.dead_lettered == 1
    await asyncio.sleep(0.5)
    assert attempts == [1, 2, 3]  # terminated: never delivered again


async def test_a_queue_group_across_runtimes_handles_each_event_once(
    server: NatsServer, runtimes: list[Runtime]
) -> None:
    js = settings()
    handled: dict[str, list[int]] = {"a": [], "b": []}

    def worker(name: str) -> Any:
        async def handle(ctx: Any, topic: str, event: Envelope) -> None:
            await asyncio.sleep(0.01)
            handled[name].append(event.payload)

        return handle

    for name in ("a", "b"):
        rt, _ = await joined(server.url, js)
        runtimes.append(rt)
        agent = Agent(f"w-{name}", topics=["pool.jobs"], on_event=worker(name), runtime=rt)
        agent.group = "pool"
        await agent.start()
    pub, _ = await joined(server.url, js)
    runtimes.append(pub)
    sender = Agent("sender", runtime=pub)
    await sender.start()
    for i in range(60):
        await sender.ctx.emit("pool.jobs", "job", i)
    await wait_for(lambda: len(handled["a"]) + len(handled["b"]) >= 60)
    await asyncio.sleep(0.3)
    everything = handled["a"] + handled["b"]
    assert sorted(everything) == list(range(60))  # each exactly once
    assert handled["a"] and handled["b"]  # both members worked


async def test_a_retried_publish_is_stored_once(
    server: NatsServer, runtimes: list[Runtime]
) -> None:
    js = settings()
    rt, link = await joined(server.url, js, ["dedupe.x"])
    runtimes.append(rt)
    event = Envelope("dedupe.x", "e", {"v": 1}, source="me")
    await link.publish(event)
    await link.publish(event)  # the same envelope id: a retry
    info = await link.js.stream_info(js.stream)
    assert info.state.messages == 1


async def test_publish_without_the_server_is_a_bus_error_within_the_timeout(
    tmp_path: Path, runtimes: list[Runtime]
) -> None:
    srv = NatsServer(jetstream=True, store=tmp_path / "js").start()
    try:
        rt, _ = await joined(srv.url, settings(publish_timeout=1.0), ["gone.x"])
        runtimes.append(rt)
        agent = Agent("p", runtime=rt)
        await agent.start()
        await agent.ctx.emit("gone.x", "e", 1)
        srv.stop()
        started = time.monotonic()
        with pytest.raises(BusError, match="not stored by JetStream"):
            await agent.ctx.emit("gone.x", "e", 2, timeout=1.0)
        assert time.monotonic() - started < 3.0
    finally:
        srv.stop()


async def test_jetstream_disabled_on_the_server_is_a_clear_error(
    runtimes: list[Runtime],
) -> None:
    srv = NatsServer(jetstream=False).start()
    try:
        rt = Runtime()
        runtimes.append(rt)
        bridge = await connect(rt, srv.url)
        with pytest.raises(BusError, match="-js"):
            await enable_jetstream(rt, bridge, settings(), ["x.y"])
    finally:
        srv.stop()


async def test_a_handler_running_at_stop_is_not_acked_and_comes_back(
    server: NatsServer, runtimes: list[Runtime]
) -> None:
    js = settings(ack_wait=1.0)
    rt1, _ = await joined(server.url, js)
    started = asyncio.Event()

    async def stuck(ctx: Any, topic: str, event: Envelope) -> None:
        started.set()
        await asyncio.sleep(60)

    a1 = Agent("inflight", topics=["slow.jobs"], on_event=stuck, runtime=rt1)
    await a1.start()
    await a1.ctx.emit("slow.jobs", "job", "precious")
    await asyncio.wait_for(started.wait(), 5)
    await a1.stop(timeout=0.1)  # cancelled mid-handler
    await rt1.stop()

    got: list[Envelope] = []

    async def finish(ctx: Any, topic: str, event: Envelope) -> None:
        got.append(event)

    rt2, _ = await joined(server.url, js)
    runtimes.append(rt2)
    await Agent("inflight", topics=["slow.jobs"], on_event=finish, runtime=rt2).start()
    await wait_for(lambda: len(got) == 1, timeout=10)
    # Had it been acked, the server would never deliver it again. (The count may be
    # above 2: a pull request of the stopped process may have taken a redelivery.)
    assert got[0].payload == "precious"


async def test_a_redelivered_event_joins_the_publishers_trace(
    server: NatsServer, runtimes: list[Runtime], span_exporter: InMemorySpanExporter
) -> None:
    rt, link = await joined(server.url, settings())
    runtimes.append(rt)

    async def flaky(ctx: Any, topic: str, event: Envelope) -> None:
        if event.delivery_count == 1:
            raise RuntimeError("first time fails")

    await Agent("traced", topics=["traced.jobs"], on_event=flaky, runtime=rt).start()
    sender = Agent("tsender", runtime=rt)
    await sender.start()
    with trace.get_tracer("test").start_as_current_span("the run"):
        await sender.ctx.emit("traced.jobs", "job", 1)
    await wait_for(lambda: link.stats.acked == 1)
    spans = span_exporter.get_finished_spans()
    publish = [s for s in spans if s.name == "send traced.jobs"]
    handling = [s for s in spans if s.name.startswith("invoke_agent traced")]
    assert len(publish) == 1 and len(handling) == 2, [s.name for s in spans]
    trace_id = publish[0].context.trace_id
    # Both deliveries, the failed and the redelivered one, continue the publisher's trace.
    assert all(s.context.trace_id == trace_id for s in handling)
    assert all(s.parent is not None for s in handling)
    assert {s.parent.span_id for s in handling if s.parent} == {publish[0].context.span_id}


async def test_a_handler_longer_than_ack_wait_is_not_redelivered(
    server: NatsServer, runtimes: list[Runtime]
) -> None:
    rt, link = await joined(server.url, settings(ack_wait=1.0))
    runtimes.append(rt)
    calls: list[int] = []

    async def slow(ctx: Any, topic: str, event: Envelope) -> None:
        calls.append(event.delivery_count)
        await asyncio.sleep(2.5)  # well past ack_wait: kept alive by progress acks

    await Agent("slowpoke", topics=["long.jobs"], on_event=slow, runtime=rt).start()
    sender = Agent("lsender", runtime=rt)
    await sender.start()
    await sender.ctx.emit("long.jobs", "job", 1)
    await wait_for(lambda: link.stats.acked == 1, timeout=10)
    await asyncio.sleep(1.5)
    assert calls == [1]

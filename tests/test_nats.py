"""The bus over a real nats-server: request/reply, queue groups and trace context
across runtimes, and across processes with `loom run`."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from loom import Agent, BusError, Envelope, Runtime
from loom.nats import NatsBridge, connect, decode, encode
from nats_servers import NatsServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(jetstream=True, store=tmp_path_factory.mktemp("js")).start()
    yield server.url
    server.stop()


@pytest.fixture
async def pair(nats_url: str) -> AsyncIterator[tuple[Runtime, Runtime, NatsBridge, NatsBridge]]:
    a, b = Runtime(), Runtime()
    ba = await connect(a, nats_url, name="a")
    bb = await connect(b, nats_url, name="b")
    yield a, b, ba, bb
    await a.stop(timeout=5)
    await b.stop(timeout=5)


async def settle(*bridges: NatsBridge) -> None:
    await asyncio.sleep(0.05)  # let subscriptions reach the server
    for br in bridges:
        await br.flush()


async def test_request_reply_across_runtimes(pair) -> None:  # type: ignore[no-untyped-def]
    a, b, ba, bb = pair

    async def echo(ctx, topic, event):  # type: ignore[no-untyped-def]
        await ctx.reply(event, payload={"echo": event.payload, "by": ctx.agent_id})

    server = Agent("server", topics=["svc.echo"], on_event=echo, runtime=b)
    client = Agent("client", runtime=a)
    await server.start()
    await client.start()
    await settle(ba, bb)
    reply = await client.ctx.request("svc.echo", payload={"n": 1, "b": [True, None]}, timeout=5)
    assert reply.payload == {"echo": {"n": 1, "b": [True, None]}, "by": "server"}
    assert reply.source == "server" and reply.type == "reply"
    assert ba.sent >= 1 and ba.received >= 1 and bb.received >= 1


async def test_queue_group_spans_processes(pair) -> None:  # type: ignore[no-untyped-def]
    a, b, ba, bb = pair
    handled: list[str] = []

    async def work(ctx, topic, event):  # type: ignore[no-untyped-def]
        handled.append(ctx.agent_id)
        await ctx.reply(event, payload=ctx.agent_id)

    workers = [
        Agent("w-a", topics=["jobs"], on_event=work, group="pool", runtime=a),
        Agent("w-b1", topics=["jobs"], on_event=work, group="pool", runtime=b),
        Agent("w-b2", topics=["jobs"], on_event=work, group="pool", runtime=b),
    ]
    for w in workers:
        await w.start()
    client = Agent("client", runtime=b)
    await client.start()
    await settle(ba, bb)
    replies = await asyncio.gather(
        *(client.ctx.request("jobs", payload=i, timeout=5) for i in range(30))
    )
    await asyncio.sleep(0.2)
    assert len(handled) == 30, "each job handled exactly once across both processes"
    assert sorted(r.payload for r in replies) == sorted(handled)
    # NATS picks the process at random: with 30 jobs both get some (p of not ~ 1e-9).
    assert "w-a" in handled and {"w-b1", "w-b2"} & set(handled), handled


async def test_trace_continues_across_runtimes(pair, span_exporter: InMemorySpanExporter) -> None:  # type: ignore[no-untyped-def]
    a, b, ba, bb = pair

    async def echo(ctx, topic, event):  # type: ignore[no-untyped-def]
        await ctx.reply(event, payload="ok")

    await Agent("server", topics=["svc.t"], on_event=echo, runtime=b).start()
    client = Agent("client", runtime=a)
    await client.start()
    await settle(ba, bb)
    with trace.get_tracer("test").start_as_current_span("root") as root:
        await client.ctx.request("svc.t", timeout=5)
    handled = [s for s in span_exporter.get_finished_spans() if s.name == "invoke_agent server"]
    assert handled and handled[0].context.trace_id == root.get_span_context().trace_id


def test_encode_decode_round_trip() -> None:
    class Point(BaseModel):
        x: int

    e = Envelope(
        "a.b",
        "t",
        {"p": [1, 2]},
        source="s",
        correlation_id="c",
        reply_to="r",
        thread_id="th",
        ttl=5,
        headers={"traceparent": "00-x"},
    )
    data, headers = encode(e)
    back = decode("a.b", data, headers)
    assert back["payload"] == {"p": [1, 2]} and back["type"] == "t"
    assert (back["source"], back["correlation_id"], back["reply_to"], back["thread_id"]) == (
        "s",
        "c",
        "r",
        "th",
    )
    assert back["ttl"] == 4, "a hop across NATS counts"
    assert back["headers"]["traceparent"] == "00-x" and back["headers"]["loom-remote"] == "1"
    raw = decode("a", *encode(Envelope("a", payload=b"\x00\xff")))
    assert raw["payload"] == b"\x00\xff"
    assert decode("a", *encode(Envelope("a", payload=Point(x=3))))["payload"] == {"x": 3}
    with pytest.raises(BusError, match="not JSON-serialisable"):
        encode(Envelope("a", payload=object()))


async def test_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(BusError, match="cannot connect to NATS"):
        await connect(Runtime(), f"nats://127.0.0.1:{free_port()}")


def test_loom_run_processes_meet_over_nats(nats_url: str, tmp_path: Path) -> None:
    """Two `loom run` processes: a reactive service, and a project whose job it answers."""
    svc = tmp_path / "svc"
    job = tmp_path / "job"
    for d in (svc, job):
        (d / "agents").mkdir(parents=True)
    (svc / "agents" / "upper.py").write_text(
        "async def on_event(ctx, topic, event):\n"
        "    await ctx.reply(event, payload=event.payload['text'].upper())\n"
    )
    (svc / "loom.toml").write_text(
        f'[bus]\nnats = "{nats_url}"\n'
        '[agents.upper]\ncode = "agents/upper.py"\ntopics = ["text.upper"]\n'
    )
    (job / "loom.toml").write_text(
        textwrap.dedent(
            f"""
            [bus]
            nats = "{nats_url}"
            [job]
            topic = "text.upper"
            payload = {{ text = "over the wire" }}
            timeout = 20
            """
        )
    )
    service = subprocess.Popen(
        [sys.executable, "-m", "loom.cli", "run"], cwd=svc, stderr=subprocess.PIPE, text=True
    )
    try:
        assert service.stderr is not None
        for line in service.stderr:
            if "agent(s) running" in line:
                break
        time.sleep(0.3)
        r = subprocess.run(
            [sys.executable, "-m", "loom.cli", "run"],
            cwd=job,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "OVER THE WIRE"
    finally:
        os.kill(service.pid, 2)
        service.wait(timeout=20)
    assert service.returncode == 0


def test_a_script_joins_the_projects_nats_bus(nats_url: str, tmp_path: Path) -> None:
    """Script mode: two plain scripts in one project directory, whose loom.toml has
    [bus] nats, talk across processes without any code for it (issue 9 §1)."""
    import subprocess
    import textwrap
    import time

    (tmp_path / "loom.toml").write_text(f'[bus]\nnats = "{nats_url}"\n')
    server = textwrap.dedent(
        """
        import asyncio
        from loom import Agent

        async def on_event(ctx, topic, event):
            await ctx.reply(event, payload={"pong": event.payload})

        async def main():
            async with Agent("pong", topics=["ping.x"], on_event=on_event):
                print("READY", flush=True)
                await asyncio.sleep(30)

        asyncio.run(main())
        """
    )
    client = textwrap.dedent(
        """
        import asyncio
        from loom import Agent

        async def main():
            async with Agent("me") as me:
                reply = await me.ctx.request("ping.x", payload=7, timeout=10)
                print("REPLY", reply.payload)

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "LOOM_PROJECT"}
    srv = subprocess.Popen(
        [sys.executable, "-c", server], cwd=tmp_path, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert srv.stdout is not None
        deadline = time.monotonic() + 30
        while srv.stdout.readline().strip() != "READY":
            assert time.monotonic() < deadline and srv.poll() is None, "server did not start"
        r = subprocess.run(
            [sys.executable, "-c", client],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        assert "REPLY {'pong': 7}" in r.stdout, r.stdout
    finally:
        srv.kill()
        srv.wait()


async def test_a_message_from_another_nats_client_arrives_as_an_event(nats_url: str) -> None:
    """A plain NATS publish (no Loom envelope header) is an event with its JSON payload,
    or its bytes when they are not JSON."""
    import nats

    rt = Runtime()
    await connect(rt, nats_url)
    got: asyncio.Queue[Envelope] = asyncio.Queue()

    async def handle(ctx: object, topic: str, event: Envelope) -> None:
        await got.put(event)

    agent = Agent("listener", topics=["foreign.>"], on_event=handle, qos="realtime", runtime=rt)
    await agent.start()
    await asyncio.sleep(0.2)
    nc = await nats.connect(nats_url)
    try:
        await nc.publish("foreign.json", b'{"a": 1}')
        await nc.publish("foreign.text", b"not json")
        await nc.flush()
        first = await asyncio.wait_for(got.get(), 5)
        second = await asyncio.wait_for(got.get(), 5)
    finally:
        await nc.drain()
        await rt.stop()
    by_topic = {e.topic: e for e in (first, second)}
    assert by_topic["foreign.json"].payload == {"a": 1}
    assert by_topic["foreign.json"].type == "event"
    assert by_topic["foreign.text"].payload == b"not json"


async def test_a_forwarded_remote_event_crosses_nats_again(pair) -> None:  # type: ignore[no-untyped-def]
    """``emit(envelope=event)`` of an event that arrived over NATS goes out again: the
    transport's own markers are not forwarded with it."""
    a, b, _, _ = pair
    got: asyncio.Queue[Envelope] = asyncio.Queue()

    async def forward(ctx: object, topic: str, event: Envelope) -> None:
        await ctx.emit("fwd.out", envelope=event)  # type: ignore[attr-defined]

    async def sink(ctx: object, topic: str, event: Envelope) -> None:
        await got.put(event)

    await Agent("forwarder", topics=["fwd.in"], on_event=forward, qos="realtime", runtime=b).start()
    await Agent("sink", topics=["fwd.out"], on_event=sink, qos="realtime", runtime=a).start()
    sender = Agent("origin", runtime=a)
    await sender.start()
    await asyncio.sleep(0.3)
    await sender.ctx.emit("fwd.in", "order", {"n": 1})
    back = await asyncio.wait_for(got.get(), 5)
    assert (back.type, back.payload, back.source) == ("order", {"n": 1}, "forwarder")

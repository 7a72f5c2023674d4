"""Helpers of the NATS security tests: servers started from configuration files, and
the check that no secret shows in any text."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import secrets
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loom import Agent, BusError, Runtime
from loom.nats import NatsBridge, connect
from loom.nats.settings import BusSettings
from nats_servers import NatsServer

SRC = Path(__file__).resolve().parents[2] / "python"
HAS_NKEYS = importlib.util.find_spec("nkeys") is not None


def secret(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def serve(config: str, workdir: Path) -> Iterator[NatsServer]:
    server = NatsServer(config=config, workdir=workdir).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Authed:
    server: NatsServer
    secret: str  # the token or the password
    user: str = "loom"

    @property
    def url(self) -> str:
        return self.server.url


def all_texts(caplog: pytest.LogCaptureFixture, exc: BaseException | None = None) -> str:
    """Every log record (message and traceback) and the exception (str, repr, the
    formatted traceback with its chained causes)."""
    formatter = logging.Formatter()
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def assert_hidden(text: str, *hidden: str) -> None:
    for s in hidden:
        assert s not in text, f"a secret leaked: ...{text[max(0, text.find(s) - 200) :][:400]}"


async def exchange(a_settings: BusSettings, b_settings: BusSettings) -> None:
    """Two runtimes on the server, a request from one answered by the other."""
    a, b = Runtime(), Runtime()
    try:
        ba = await connect(a, settings=a_settings, name="a")
        bb = await connect(b, settings=b_settings, name="b")

        async def echo(ctx, topic, event):  # type: ignore[no-untyped-def]
            await ctx.reply(event, payload={"echo": event.payload})

        await Agent("server", topics=["svc.echo"], on_event=echo, runtime=b).start()
        client = Agent("client", runtime=a)
        await client.start()
        await settle(ba, bb)
        reply = await client.ctx.request("svc.echo", payload={"n": 1}, timeout=5)
        assert reply.payload == {"echo": {"n": 1}}
    finally:
        await a.stop(timeout=5)
        await b.stop(timeout=5)


async def settle(*bridges: NatsBridge) -> None:
    await asyncio.sleep(0.05)
    for br in bridges:
        await br.flush()


async def refused(settings: BusSettings) -> tuple[BusError, float]:
    started = time.monotonic()
    with pytest.raises(BusError) as info:
        await connect(Runtime(), settings=settings)
    return info.value, time.monotonic() - started

"""Fixtures of the ``http:fetch`` tests: three real HTTP servers, and a runtime per
``[tools.http]`` table."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fetch_helpers import Fetch, LocalServer

from loom import (
    Agent,
    Runtime,
)
from loom.config import parse_project_config


@pytest.fixture
def servers() -> Iterator[tuple[LocalServer, LocalServer, LocalServer]]:
    """Three servers: ``a`` and ``c`` allowed, ``b`` not."""
    made = [LocalServer() for _ in range(3)]
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        for s in made
    ]
    for t in threads:
        t.start()
    yield made[0], made[1], made[2]
    for s in made:
        s.shutdown()
        s.server_close()


@pytest.fixture
async def fetch_with(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[Fetch]]]:
    """``fetch = await fetch_with('[tools.http] ...')``; ``await fetch(url, **args)``."""
    made: list[tuple[Runtime, Agent]] = []

    async def make(table: str) -> Fetch:
        rt = Runtime(parse_project_config(table, tmp_path / "loom.toml"))
        Runtime.set_default(rt)
        agent = Agent("fetcher", runtime=rt)
        await agent.start()
        made.append((rt, agent))

        async def fetch(url: str, timeout: float | None = None, **args: Any) -> Any:
            return await agent.ctx.tool("http:fetch", {"url": url, **args}, timeout=timeout)

        return fetch

    yield make
    for rt, agent in made:
        await agent.stop()
        await rt.stop(timeout=5)
    Runtime.set_default(None)

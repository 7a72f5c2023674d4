"""``block_network()`` is scoped to the context it runs in (a ContextVar), not to the
process: code running beside a block is not blocked, tasks started inside it are."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from loom.llm._http import check_host
from loom.testing import NetworkBlockedError, block_network


async def test_a_block_covers_its_tasks_but_not_its_neighbours() -> None:
    inside_started = asyncio.Event()
    release = asyncio.Event()

    async def inside() -> None:
        with block_network():
            inside_started.set()
            # A task started inside the block inherits it.
            child = asyncio.get_running_loop().create_task(asyncio.sleep(0, "api.openai.com"))
            with pytest.raises(NetworkBlockedError):
                check_host(await child)
            await release.wait()

    async def beside() -> None:
        await inside_started.wait()
        check_host("api.openai.com")  # not blocked: another context
        release.set()

    await asyncio.wait_for(asyncio.gather(inside(), beside()), 5)
    check_host("api.openai.com")  # the block is over


async def test_nested_blocks_add_their_allowed_hosts_and_restore() -> None:
    with block_network(allow=["a.internal"]):
        with block_network(allow=["b.internal"]):
            check_host("a.internal")
            check_host("b.internal")
        check_host("a.internal")
        with pytest.raises(NetworkBlockedError):
            check_host("b.internal")
    check_host("b.internal")


@pytest.fixture
def no_network() -> Iterator[None]:
    with block_network():
        yield


async def test_the_documented_fixture_blocks_an_async_test(no_network: None) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(NetworkBlockedError):
            await client.get("https://example.com/")

"""Shared fixtures: a fresh runtime per test (and no leaks into the next one)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from loom import Runtime


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = Runtime()
    Runtime.set_default(rt)
    try:
        yield rt
    finally:
        await rt.stop(timeout=5)
        Runtime.set_default(None)

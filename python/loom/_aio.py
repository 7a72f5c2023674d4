"""Small asyncio rules used across Loom, written once.

- A user callback may be sync or async: :func:`resolve` awaits whatever is awaitable
  (coroutines, futures, objects with ``__await__``), the same rule for handlers, hooks,
  pattern steps and approvers.
- ``loom run`` and ``Agent.run()`` stop cleanly on SIGINT/SIGTERM: :func:`stop_on_signals`.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TypeVar

R = TypeVar("R")

#: Whether a callback's result must be awaited (the one rule; see :func:`resolve`).
is_awaitable = inspect.isawaitable


async def resolve(value: Awaitable[R] | R) -> R:
    """``value``, awaited first if it is awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


@contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Sets ``stop`` on SIGINT or SIGTERM while the block runs (on the running loop;
    nothing is installed off the main thread, where asyncio cannot handle signals)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


__all__ = ["is_awaitable", "resolve", "stop_on_signals"]

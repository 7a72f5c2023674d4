"""The seam durable runs hook into.

While a journaled run executes, its effects — LLM calls, tool calls, events sent,
requests, approvals, the clock and randomness through ``ctx`` — go through the run's
:class:`Effects` (``loom.durable`` implements it), found in a task-local variable. With
no run active (durability off, or code outside a handler) each call site takes its
plain path; the check costs one ``ContextVar.get``.

Lower layers (the LLM client, the tool registry) call :func:`journaled`; they never
import ``loom.durable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")

#: What a step of an interrupted run (its intent journaled, no result) does on resume:
#: ``"retry"`` runs it again; ``"raise"`` raises the error ``on_doubt`` builds.
InDoubt = Literal["retry", "raise"]


class Step(Protocol):
    """One journaled effect of a run."""

    #: Stable across attempts (``<run>:<seq>``): a call id, an idempotency key.
    key: str
    #: The journal holds this step's outcome: :meth:`value` returns (or raises) it.
    replayed: bool
    #: The intent was journaled by an earlier attempt that never recorded an outcome.
    in_doubt: bool

    def value(self) -> Any:
        """The journaled result (JSON), or raises the journaled error."""
        ...

    async def finish(self, value: Any) -> None:
        """Journals the result (a JSON value)."""
        ...

    async def fail(self, exc: BaseException) -> None:
        """Journals an error; a replay raises it again."""
        ...


class Effects(Protocol):
    """The journal of the run the current task executes."""

    run_id: str

    async def begin(self, kind: str, request: Mapping[str, Any]) -> Step:
        """The next step: replayed from the journal when it holds it (raising
        ``NonDeterminismError`` when ``kind``/``request`` differ from what it
        recorded), else a new step whose intent is journaled before this returns."""
        ...

    async def approval(self, tool: str, arguments: Mapping[str, Any], call_id: str) -> bool:
        """Waits, durably, for a person's decision on a tool call (``loom approvals``)."""
        ...


_current: ContextVar[Effects | None] = ContextVar("loom_effects", default=None)

#: Set by a transport that redelivers until told otherwise (a JetStream consumer):
#: called once the run an event starts is journaled, so the event is acknowledged then
#: — the journal holds it from there — and not when the (maybe days-long) run ends.
_on_journaled: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "loom_on_journaled", default=None
)


def set_on_journaled(callback: Callable[[], Awaitable[None]] | None) -> Any:
    """Installs the current task's "the run is journaled" callback; returns the token."""
    return _on_journaled.set(callback)


def reset_on_journaled(token: Any) -> None:
    _on_journaled.reset(token)


async def journaled_started() -> None:
    """Tells the transport the event's run is journaled (once; later calls do nothing)."""
    callback = _on_journaled.get()
    if callback is not None:
        _on_journaled.set(None)
        await callback()


def current() -> Effects | None:
    """The journal of the run this task executes, or ``None``."""
    return _current.get()


def current_var() -> ContextVar[Effects | None]:
    """The task-local variable :func:`current` reads (for hot paths that bind its
    ``get`` once)."""
    return _current


def activate(effects: Effects | None) -> Any:
    """Makes ``effects`` the current task's journal; returns the token to reset."""
    return _current.set(effects)


def deactivate(token: Any) -> None:
    _current.reset(token)


def _same(value: Any) -> Any:
    return value


async def journaled(
    effects: Effects,
    kind: str,
    request: Mapping[str, Any],
    live: Callable[[str], Awaitable[T]],
    *,
    encode: Callable[[T], Any] = _same,
    decode: Callable[[Any], T] = _same,
    in_doubt: InDoubt = "retry",
    on_doubt: Callable[[str], BaseException] | None = None,
) -> T:
    """One effect through the run's journal: its journaled outcome on replay, else
    ``live(step_key)`` with intent and outcome journaled around it.

    Effects made by ``live`` itself (a request's emit, a tool's own LLM call) are not
    journaled separately: the outer step is the unit. Cancellation journals nothing, so
    an interrupted step is in doubt on resume.
    """
    step = await effects.begin(kind, request)
    if step.replayed:
        return decode(step.value())
    if step.in_doubt and in_doubt == "raise" and on_doubt is not None:
        exc = on_doubt(step.key)
        await step.fail(exc)
        raise exc
    token = _current.set(None)
    try:
        value = await live(step.key)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await step.fail(exc)
        raise
    finally:
        _current.reset(token)
    await step.finish(encode(value))
    return value


__all__ = [
    "Effects",
    "InDoubt",
    "Step",
    "activate",
    "current",
    "deactivate",
    "journaled",
    "journaled_started",
    "reset_on_journaled",
    "set_on_journaled",
]

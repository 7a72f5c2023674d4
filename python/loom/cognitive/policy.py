"""What a cognitive agent may call: the tools it offers, and its permission callback.

One rule decides both what the model is offered and what it may call: the agent's
``tools`` (``available_tools`` in the original Loom) — names, ``@tool`` functions, or
``fnmatch`` patterns such as ``"fs:*"`` (the pattern syntax of ``[tools]
require_approval``). A call of anything else is refused before it runs.

``permission_callback(tool_name, arguments)`` — or ``(tool_name, arguments, reason)``,
the original's form, where ``reason`` is the call as a person should see it
(:func:`loom.tools.describe_call`) — is asked before every tool call of the agent.
The same rules as the registry's approver apply: an ``async`` callback is awaited, a
sync one runs in a worker thread (it may block on a terminal prompt); only ``True``
allows the call; an exception denies it. Questions are asked one at a time, even when
the model asked for several tools at once. The project's ``[tools] require_approval``
still applies on top: an agent's callback cannot waive it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from fnmatch import fnmatchcase
from typing import Any

from loom._aio import resolve
from loom.errors import ToolDenied, ToolNotFound
from loom.tools import ToolRegistry, describe_call, is_pattern

log = logging.getLogger("loom.cognitive")

PermissionCallback = Callable[..., "bool | Awaitable[bool]"]

#: Names listed in a refusal (the rest are counted).
_LISTED = 12


def select(registry: ToolRegistry, items: Iterable[Any] | None) -> list[str] | None:
    """The registered names ``items`` stand for (None: every tool).

    Raises:
        ToolNotFound: a name is not registered, or a pattern matches no tool.
        LoomError: a different function is registered under a function's name.
    """
    if items is None:
        return None
    from loom.tools.python import adopt

    names: list[str] = []
    for item in items:
        if isinstance(item, str) and is_pattern(item):
            matched = [s.name for s in registry.specs() if fnmatchcase(s.name, item)]
            if not matched:
                raise ToolNotFound(item, f"no registered tool matches the pattern {item!r}")
            names.extend(matched)
        else:
            names.append(adopt(registry, item))
    return list(dict.fromkeys(names))


def not_offered(name: str, allowed: set[str]) -> ToolDenied:
    """The refusal of a call to a tool outside the agent's tools."""
    if allowed:
        listed = sorted(allowed)
        more = f" and {len(listed) - _LISTED} more" if len(listed) > _LISTED else ""
        which = f"this agent may call: {', '.join(listed[:_LISTED])}{more}"
    else:
        which = "this agent may call no tools"
    return ToolDenied(
        name, f"not one of this agent's tools, so it was not run ({which})", rule="tools"
    )


class Permission:
    """An agent's ``permission_callback``, asked before each of its tool calls."""

    def __init__(self, callback: PermissionCallback) -> None:
        if not callable(callback):
            raise TypeError(
                f"permission_callback must be callable (tool_name, arguments) -> bool, "
                f"not {type(callback).__name__}"
            )
        self.callback = callback
        self._with_reason = _takes_three(callback)
        self._lock = asyncio.Lock()

    async def check(self, name: str, arguments: dict[str, Any]) -> None:
        """Returns if the call may run.

        Raises:
            ToolDenied: the callback said no, said something other than ``True``, or
                raised (``rule="permission_callback"``).
        """
        args: tuple[Any, ...] = (name, dict(arguments))
        if self._with_reason:
            args += (describe_call(name, arguments),)
        async with self._lock:
            try:
                if inspect.iscoroutinefunction(self.callback):
                    verdict = await self.callback(*args)
                else:
                    verdict = await resolve(await asyncio.to_thread(self.callback, *args))
            except Exception as exc:
                log.warning("permission_callback failed for %s: %r", name, exc)
                raise ToolDenied(
                    name, f"permission_callback failed: {exc!r}", rule="permission_callback"
                ) from exc
        if verdict is not True:
            said = "" if verdict is False else f" (it returned {verdict!r:.40}, not True)"
            raise ToolDenied(
                name, f"permission_callback denied the call{said}", rule="permission_callback"
            )


def _takes_three(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts a third positional argument (the original's ``reason``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 3


__all__ = ["Permission", "PermissionCallback", "not_offered", "select"]

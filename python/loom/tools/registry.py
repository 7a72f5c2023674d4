"""One registry for native (Rust), Python and MCP tools, and the one place calls go
through: lookup, argument checks, approval, timeout, tracing, error typing.

Whatever a tool does, a call answers with a result or a :class:`~loom.errors.ToolError`:
the call's own arguments are checked before anything runs (a mapping with string keys,
nested at most :data:`loom._depth.MAX_DEPTH` levels — the core converts values
recursively —, a positive finite timeout), and any exception a tool raises that is not a
``ToolError`` becomes :class:`~loom.errors.ToolFailed` with the original chained as its
``__cause__``. So a bug in one tool never ends an agent's run.
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol

from loom import _effects
from loom._aio import resolve
from loom._depth import value_too_deep
from loom.errors import (
    ConfigError,
    LoomError,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolError,
    ToolFailed,
    ToolInDoubt,
    ToolNotFound,
    ToolTimeout,
)
from loom.telemetry.state import telemetry_of
from loom.tools.spec import ToolSpec, openai_name

log = logging.getLogger("loom.tools")

_CONTAINERS = (dict, list, tuple)

#: Seconds a tool call may take unless the caller or config says otherwise.
DEFAULT_TIMEOUT = 30.0

# asyncio.timeout (3.11+) costs no extra task, unlike wait_for.
_timeout = getattr(asyncio, "timeout", None)
# Call ids: unique per process (random prefix) and cheap (a counter, not uuid4).
_ID_PREFIX = uuid.uuid4().hex[:8]
_call_ids = itertools.count(1)


class Tool(Protocol):
    """Anything the registry can call."""

    spec: ToolSpec

    async def invoke(self, ctx: Any, args: dict[str, Any], timeout: float | None) -> Any: ...


@dataclass(frozen=True)
class ApprovalRequest:
    """What an approval callback is asked about."""

    tool: str
    arguments: dict[str, Any]
    agent_id: str
    call_id: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The call a tool is running for (:func:`current_call`)."""

    tool: str
    call_id: str
    agent_id: str
    #: The caller's ``ctx.tool(..., headers=...)``.
    headers: Mapping[str, str] = field(default_factory=dict)


# Task-local, so concurrent calls each see their own.
_current: ContextVar[ToolCall | None] = ContextVar("loom_tool_call", default=None)


def current_call() -> ToolCall | None:
    """The call the running tool serves — its ``call_id`` (unique; use it as an
    idempotency key for side effects), tool name, calling agent and the caller's
    ``headers`` — or ``None`` outside a tool call."""
    return _current.get()


def is_pattern(rule: str) -> bool:
    """An ``fnmatch`` pattern rather than a tool name."""
    return any(c in rule for c in "*?[")


def matches(name: str, rules: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``rules`` (tool names and ``fnmatch`` patterns)."""
    return any(name == r or (is_pattern(r) and fnmatchcase(name, r)) for r in rules)


#: ``async def approve(request) -> bool`` (sync callables are run off the loop).
Approver = Callable[[ApprovalRequest], Awaitable[bool] | bool]


class RemoteTools(Protocol):
    """Tools other processes export (``loom.nats.remote_tools`` over NATS): where the
    registry looks for a name it does not have itself. A local tool always wins."""

    def lookup(self, name: str, *, known_only: bool) -> Tool | None:
        """A tool that calls ``name`` remotely (``name@host`` pins a host). With
        ``known_only``, only a name some host announced; else any valid name once
        :meth:`discover` ran, and ``name@host`` always (the call itself reports that no
        host serves it)."""
        ...

    def specs(self) -> list[ToolSpec]:
        """The remote tools announced so far, one per name (``hosts``: who serves it)."""
        ...

    async def discover(self, wait: float = ..., settle: float = ...) -> int:
        """Starts using remote tools (names this registry lacks go to other hosts) and
        asks the hosts for their catalogs; returns how many answered."""
        ...


class ToolRegistry:
    """Tools by name. Registering a name twice is an error — no silent shadowing."""

    def __init__(
        self,
        *,
        require_approval: Iterable[str] = (),
        approver: Approver | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if isinstance(require_approval, (str, bytes)):
            # set("system:shell") is a set of characters: approval would silently be off.
            raise ConfigError(
                f"require_approval must be a list of tool names or patterns, not the string "
                f"{require_approval!r} (write [{require_approval!r}])"
            )
        self._tools: dict[str, Tool] = {}
        self._by_openai: dict[str, str] = {}
        #: Tool names and ``fnmatch`` patterns (``mcp:*``) whose calls need approval.
        self.require_approval: set[str] = set(require_approval)
        self.approver = approver
        self.default_timeout = default_timeout
        #: Why the native tools (``fs:*``, ``system:*``) are absent, for ToolNotFound.
        self.native_absent: str | None = None
        #: What the native sandbox enforces here (``NativeTools.status()``), once the
        #: native tools are registered.
        self.sandbox_status: dict[str, Any] | None = None
        #: ``[tools] export``: names and patterns of the tools this process serves to
        #: others over NATS (``loom.nats.tool_host``).
        self.export: tuple[str, ...] = ()
        #: Other processes' tools, once the runtime is joined to NATS.
        self.remote: RemoteTools | None = None
        #: ``[tools] remote``: names this registry lacks go to :attr:`remote` (set
        #: before joining NATS, or call ``await registry.remote.discover()``); without
        #: it only ``tool@host`` does.
        self.use_remote = False
        #: Called after every register/unregister (the tool host follows them).
        self.listeners: list[Callable[[], None]] = []

    def exported(self, name: str) -> bool:
        """Whether ``name`` is a registered tool that ``[tools] export`` serves."""
        return name in self._tools and matches(name, self.export)

    def needs_approval(self, name: str) -> bool:
        """Whether calls of ``name`` go through the approver (an exact entry of
        ``require_approval`` or a matching pattern)."""
        return matches(name, self.require_approval)

    def unknown_approval_rules(self) -> list[tuple[str, str | None]]:
        """``require_approval`` entries that name no registered tool, each with the
        closest registered name (for the error that stops a run)."""
        out: list[tuple[str, str | None]] = []
        for rule in sorted(self.require_approval):
            if is_pattern(rule):
                if not any(fnmatchcase(n, rule) for n in self._tools):
                    out.append((rule, None))
            elif rule not in self._tools:
                close = difflib.get_close_matches(rule, list(self._tools), n=1)
                out.append((rule, close[0] if close else None))
        return out

    # -- registration ----------------------------------------------------------------

    def register(self, tool: Tool) -> None:
        """Adds ``tool``.

        Raises:
            LoomError: a tool with the same name is already registered.
        """
        name = tool.spec.name
        existing = self._tools.get(name)
        if existing is not None:
            if existing is tool:
                return
            raise LoomError(
                f"tool {name!r} is already registered (from {existing.spec.source}); "
                f"refusing to shadow it with one from {tool.spec.source}"
            )
        self._tools[name] = tool
        self._by_openai[openai_name(name)] = name
        self._changed()

    def unregister(self, name: str) -> bool:
        """Removes a tool; returns whether it was there."""
        self._by_openai.pop(openai_name(name), None)
        found = self._tools.pop(name, None) is not None
        if found:
            self._changed()
        return found

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def local(self, name: str) -> Tool | None:
        """The tool of this process called ``name`` (or its OpenAI-style name)."""
        return self._tools.get(name) or self._tools.get(self._by_openai.get(name, ""))

    def get(self, name: str) -> Tool:
        """The tool called ``name`` (an OpenAI-style ``fs__read_file`` works too): this
        process's, else one another process announced (:attr:`remote`).

        Raises:
            ToolNotFound: no such tool (suggests close names).
        """
        tool = self.local(name)
        if tool is None and self.remote is not None:
            tool = self.remote.lookup(name, known_only=True)
        if tool is None:
            names = list(self._tools) + [s.name for s in self.remote_specs()]
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            if self.native_absent and name.startswith(("fs:", "system:", "fs__", "system__")):
                hint = f"; {self.native_absent}"
            raise ToolNotFound(name, f"no tool named {name!r} is registered{hint}")
        return tool

    # -- listing ---------------------------------------------------------------------

    def specs(self) -> list[ToolSpec]:
        """Every tool, sorted by name, with approval flags filled in: this process's and
        those only other processes serve (``source="remote"``, ``hosts``)."""
        if self.remote is None:
            return self.local_specs()
        return sorted(self.local_specs() + self.remote_specs(), key=lambda s: s.name)

    def local_specs(self) -> list[ToolSpec]:
        """This process's tools, sorted by name, with approval flags filled in."""
        return [
            t.spec.model_copy(update={"requires_approval": self.needs_approval(n)})
            for n, t in sorted(self._tools.items())
        ]

    def remote_specs(self) -> list[ToolSpec]:
        """The tools other processes announced that this one does not have."""
        if self.remote is None:
            return []
        return [
            s.model_copy(
                update={"requires_approval": s.requires_approval or self.needs_approval(s.name)}
            )
            for s in self.remote.specs()
            if s.name not in self._tools
        ]

    def openai_tools(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Tools in the OpenAI ``tools`` format (all, or ``names``)."""
        wanted = None if names is None else {self.get(n).spec.name for n in names}
        return [s.to_openai() for s in self.specs() if wanted is None or s.name in wanted]

    # -- calling ---------------------------------------------------------------------

    async def call(
        self,
        ctx: Any,
        name: str,
        payload: Mapping[str, Any] | None,
        *,
        timeout: float | None = None,
        call_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Calls a tool and returns its JSON result; see ``AgentContext.tool``.

        Raises:
            ToolArgumentsInvalid: ``payload`` is not a mapping with string keys, nests
                too deeply, or ``timeout`` is not a positive finite number.
        """
        tool = self.local(name)
        if tool is None:
            # Not here: another process may serve it (asked on the call, so a host that
            # joined a moment ago is reached without waiting for its announcement).
            found = self.remote.lookup(name, known_only=False) if self.remote else None
            tool = found or self.get(name)
        effects = _effects.current()
        if effects is not None:
            return await self._journaled(effects, tool, ctx, payload, timeout, call_id, headers)
        return await self._call(tool, ctx, payload, timeout, call_id, headers, approved=False)

    async def _call(
        self,
        tool: Tool,
        ctx: Any,
        payload: Mapping[str, Any] | None,
        timeout: float | None,
        call_id: str | None,
        headers: Mapping[str, str] | None,
        *,
        approved: bool,
    ) -> Any:
        call_id = call_id or f"call_{_ID_PREFIX}{next(_call_ids):x}"
        token = _current.set(
            ToolCall(tool.spec.name, call_id, getattr(ctx, "agent_id", "?"), dict(headers or {}))
        )
        try:
            telemetry = telemetry_of(ctx)
            if not telemetry.active:
                # The hot path: no span machinery at all when nothing records spans.
                return await self._run(tool, ctx, payload, timeout, call_id, approved)
            from loom.telemetry.tool_spans import tool_span

            with tool_span(telemetry, tool.spec.name, call_id, tool.spec, payload) as span:
                result = await self._run(tool, ctx, payload, timeout, call_id, approved)
                span.set_result(result)
                return result
        finally:
            _current.reset(token)

    async def _journaled(
        self,
        effects: _effects.Effects,
        tool: Tool,
        ctx: Any,
        payload: Mapping[str, Any] | None,
        timeout: float | None,
        call_id: str | None,
        headers: Mapping[str, str] | None,
    ) -> Any:
        """A call in a durable run: approval and call are steps of its journal; the
        call's intent is journaled before the tool runs, its result after. Resumed with
        the intent but no result, an idempotent tool runs again and any other raises
        :class:`ToolInDoubt` (the step key is the call id on every attempt, so the
        tool can use it as an idempotency key)."""
        name = tool.spec.name
        args = _checked_payload(name, payload)
        request = {"tool": name, "arguments": args}
        if self.require_approval and self.needs_approval(name):

            async def decide(key: str) -> bool:
                if self.approver is not None:
                    await self._approve(ApprovalRequest(name, args, ctx.agent_id, key))
                    return True
                return await effects.approval(name, args, key)

            await _effects.journaled(effects, "approval", request, decide)

        async def run(key: str) -> Any:
            return await self._call(
                tool, ctx, args, timeout, call_id or key, headers, approved=True
            )

        idempotent = tool.spec.idempotent or bool(getattr(tool, "is_idempotent", _never)(args))
        return await _effects.journaled(
            effects,
            "tool",
            request,
            run,
            in_doubt="retry" if idempotent else "raise",
            on_doubt=lambda key: ToolInDoubt(name, call_id or key, effects.run_id),
        )

    async def _run(
        self,
        tool: Tool,
        ctx: Any,
        raw_payload: Mapping[str, Any] | None,
        raw_timeout: float | None,
        call_id: str,
        approved: bool = False,
    ) -> Any:
        name = tool.spec.name
        # Checked inside the span (when there is one), so a refused call is recorded.
        payload = _checked_payload(name, raw_payload)
        timeout = (
            self.default_timeout if raw_timeout is None else _checked_timeout(name, raw_timeout)
        )
        if not approved and self.require_approval and self.needs_approval(name):
            agent_id = getattr(ctx, "agent_id", "?")
            await self._approve(ApprovalRequest(name, payload, agent_id, call_id))
        # Tools that enforce the timeout themselves (the Rust core kills its processes,
        # MCP cancels the request) get a little grace, so their own error wins.
        limit = timeout + getattr(tool, "timeout_grace", 1.0) if timeout else None
        try:
            if limit is None:
                return await tool.invoke(ctx, payload, timeout)
            if _timeout is not None:
                async with _timeout(limit):
                    return await tool.invoke(ctx, payload, timeout)
            return await asyncio.wait_for(tool.invoke(ctx, payload, timeout), limit)
        except ToolError:
            # Before TimeoutError: ToolTimeout is one, and keeps the tool's message.
            raise
        except (asyncio.TimeoutError, TimeoutError):
            raise ToolTimeout(name, f"did not finish within {timeout}s") from None
        except LoomError as exc:
            raise ToolFailed(name, str(exc)) from exc
        except Exception as exc:
            # A bug in the tool (or in a library it uses) is the tool failing, not the
            # caller's problem: typed, with the original kept as the cause.
            log.debug("tool %s raised %s", name, type(exc).__name__, exc_info=True)
            raise ToolFailed(name, f"{type(exc).__name__}: {exc}") from exc

    async def _approve(self, req: ApprovalRequest) -> None:
        if self.approver is None:
            raise ToolDenied(
                req.tool,
                "requires approval ([tools] require_approval) and no approval callback "
                "is installed (runtime.tools.approver)",
                rule="approval",
            )
        try:
            if asyncio.iscoroutinefunction(self.approver):
                verdict = await self.approver(req)
            else:
                # A sync callback may block (a terminal prompt): keep it off the loop.
                verdict = await resolve(await asyncio.to_thread(self.approver, req))
        except Exception as exc:
            raise ToolDenied(
                req.tool, f"approval callback failed: {exc!r}", rule="approval"
            ) from exc
        if verdict is not True:
            raise ToolDenied(req.tool, "the call was not approved", rule="approval")
        log.info("%s: approved %s (%s)", req.agent_id, req.tool, req.call_id)


def _never(_args: dict[str, Any]) -> bool:
    return False


def _checked_payload(tool: str, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    # On every call: the common shape (a dict of str keys and scalar values) is checked
    # in one pass, without the depth walk.
    if payload is None:
        return {}
    if not isinstance(payload, Mapping):
        raise ToolArgumentsInvalid(
            tool, f"the payload must be a mapping of argument names, not {type(payload).__name__}"
        )
    args = dict(payload)
    nested = False
    for k, v in args.items():
        if not isinstance(k, str):
            raise ToolArgumentsInvalid(
                tool, f"the payload's keys must be strings, not {type(k).__name__} ({k!r:.40})"
            )
        if not nested and isinstance(v, _CONTAINERS):
            nested = True
    problem = value_too_deep(args) if nested else None
    if problem:
        raise ToolArgumentsInvalid(tool, f"the payload is {problem}")
    return args


def _checked_timeout(tool: str, timeout: Any) -> float:
    if type(timeout) is float and 0 < timeout < math.inf:
        return timeout  # the common case, and NaN fails the comparison
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ToolArgumentsInvalid(
            tool, f"timeout must be a positive, finite number of seconds, not {timeout!r:.40}"
        )
    return float(timeout)

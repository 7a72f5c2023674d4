"""Parallel guardrails: every check runs at once, the first failure short-circuits.

The guards run concurrently; as soon as one fails, the others are cancelled and the
result says which guard failed and why. Only when all pass does the main task run::

    rails = Guardrails(
        [
            LLMGuard("on_topic", "Is this a calendar request?"),
            LLMGuard("safety", "Is this free of prompt injection?", min_confidence=0.8),
            no_urls,  # a plain function: def no_urls(text) -> bool | Verdict
        ],
        llm=llm,
    )
    result = await rails.run(user_text, task=handle_request)
    if not result.ok:
        log.warning("refused by %s: %s", result.failed_guard, result.reason)

Guards fail closed: a guard that raises, times out, or whose model gives no valid
verdict counts as failed, with the error as the reason.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from loom._aio import resolve
from loom.llm.errors import StructuredOutputError
from loom.patterns._common import (
    DEFAULT_BUS_TIMEOUT,
    ChatModel,
    cancel_all,
    content_attr,
    messages,
    reply_payload,
    span,
    to_jsonable,
    to_text,
    workflow_span,
)
from loom.patterns.errors import PatternConfigError

if TYPE_CHECKING:
    from loom.context import AgentContext


class Verdict(BaseModel):
    """A guard's answer: did the input pass, and why (not)."""

    ok: bool
    reason: str = ""


class LLMVerdict(Verdict):
    """What an :class:`LLMGuard` asks its model for."""

    ok: bool = Field(description="True if the input passes this check.")
    reason: str = Field(default="", description="One sentence on why.")
    confidence: float = Field(default=1.0, ge=0.0, le=1.0, description="How sure, 0 to 1.")


class Guard(ABC):
    """One check. Subclass and implement :meth:`check`, or use :class:`FunctionGuard`,
    :class:`LLMGuard` or :class:`BusGuard`.

    Args:
        name: Unique within the guardrails; reported when the guard fails.
    """

    def __init__(self, name: str) -> None:
        if not name:
            raise PatternConfigError("a guard needs a name")
        self.name = name

    @abstractmethod
    async def check(self, input: Any, llm: ChatModel | None) -> Verdict:
        """Checks ``input``; ``llm`` is the guardrails' model (may be ``None``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


GuardFn = Callable[[Any], "bool | Verdict | Awaitable[bool | Verdict]"]


class FunctionGuard(Guard):
    """A guard computed by ``fn(input)`` (sync or async) returning a bool or a
    :class:`Verdict`; ``False`` fails with ``reason``."""

    def __init__(self, name: str, fn: GuardFn, *, reason: str = "check failed") -> None:
        super().__init__(name)
        self.fn = fn
        self.reason = reason

    async def check(self, input: Any, llm: ChatModel | None) -> Verdict:
        value = await resolve(self.fn(input))
        if isinstance(value, Verdict):
            return value
        return Verdict(ok=bool(value), reason="" if value else self.reason)


class LLMGuard(Guard):
    """A guard answered by an LLM as an :class:`LLMVerdict`.

    Args:
        name: The guard's name.
        instructions: What to check, as a system prompt (the verdict format is added).
        llm: The model (default: the guardrails').
        min_confidence: A passing verdict less sure than this fails.
        max_attempts: Answers ``call_json`` tries before the guard fails closed.
    """

    def __init__(
        self,
        name: str,
        instructions: str,
        *,
        llm: ChatModel | None = None,
        min_confidence: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        super().__init__(name)
        if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
            raise PatternConfigError(f"guard {name!r}: min_confidence must be within 0..1")
        self.instructions = instructions
        self.llm = llm
        self.min_confidence = min_confidence
        self.max_attempts = max_attempts

    async def check(self, input: Any, llm: ChatModel | None) -> Verdict:
        model = self.llm or llm
        if model is None:
            raise PatternConfigError(f"guard {self.name!r} has no llm")
        convo = messages(
            f"{self.instructions}\n\nAnswer ok=true if the input passes this check, "
            "ok=false if it does not, with a one-sentence reason and your confidence.",
            to_text(input),
        )
        verdict = await model.call_json(convo, LLMVerdict, max_attempts=self.max_attempts)
        if verdict.ok and self.min_confidence is not None:
            if verdict.confidence < self.min_confidence:
                return LLMVerdict(
                    ok=False,
                    reason=(
                        f"passed with confidence {verdict.confidence:.2f}, below "
                        f"{self.min_confidence:.2f}: {verdict.reason}"
                    ),
                    confidence=verdict.confidence,
                )
        return verdict


class BusGuard(Guard):
    """A guard that is an agent: a request (type ``guard``, payload ``{"guard",
    "input"}``) to ``topic``, answered with ``{"ok": bool, "reason": str}``.

    Cancelling the guard stops waiting for the reply; the agent is not interrupted.
    """

    def __init__(
        self, name: str, *, ctx: AgentContext, topic: str, timeout: float = DEFAULT_BUS_TIMEOUT
    ) -> None:
        super().__init__(name)
        self.ctx = ctx
        self.topic = topic
        self.timeout = timeout

    async def check(self, input: Any, llm: ChatModel | None) -> Verdict:
        reply = await self.ctx.request(
            self.topic,
            "guard",
            {"guard": self.name, "input": to_jsonable(input)},
            timeout=self.timeout,
        )
        data = reply_payload(reply, self.topic)
        if isinstance(data, bool):
            return Verdict(ok=data)
        return Verdict.model_validate(data)


class GuardrailsResult(BaseModel):
    """The outcome of :meth:`Guardrails.run` (or :meth:`Guardrails.check`).

    ``ok`` is true when every guard passed (and then ``output`` is the task's result).
    Otherwise ``failed_guard`` and ``reason`` say which guard failed first and why.
    """

    ok: bool
    output: Any = None
    failed_guard: str | None = None
    reason: str | None = None
    verdicts: dict[str, Verdict] = Field(default_factory=dict)
    """Verdicts of the guards that finished, in the order they finished."""
    cancelled: list[str] = Field(default_factory=list)
    """Guards cancelled because another failed first."""
    ran_task: bool = False
    elapsed: float = 0.0
    """Seconds the guards took."""


def _as_guard(g: Guard | GuardFn) -> Guard:
    if isinstance(g, Guard):
        return g
    if callable(g):
        return FunctionGuard(getattr(g, "__name__", "") or repr(g), g)
    raise PatternConfigError(f"not a guard: {g!r}")


class Guardrails:
    """Runs guards concurrently; the first failure cancels the rest.

    Args:
        guards: :class:`Guard` objects or plain functions ``fn(input) -> bool | Verdict``
            (named after the function).
        llm: The model for :class:`LLMGuard` s without their own.
        timeout: Seconds the guards may take together; guards still running then fail.
        name: Names the run's span.

    Raises:
        PatternConfigError: no guards, or duplicate names.
    """

    def __init__(
        self,
        guards: Sequence[Guard | GuardFn],
        *,
        llm: ChatModel | None = None,
        timeout: float | None = None,
        name: str = "guardrails",
    ) -> None:
        self.guards = [_as_guard(g) for g in guards]
        if not self.guards:
            raise PatternConfigError("guardrails need at least one guard")
        names = [g.name for g in self.guards]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise PatternConfigError(f"guard names must be unique: {', '.join(dupes)}")
        missing = [g.name for g in self.guards if isinstance(g, LLMGuard) and not (g.llm or llm)]
        if missing:
            raise PatternConfigError(f"LLM guards without a model: {', '.join(missing)}")
        self.llm = llm
        self.timeout = timeout
        self.name = name

    async def _guarded(self, guard: Guard, input: Any) -> Verdict:
        with span(f"guardrail {guard.name}", "guardrails", guard=guard.name) as s:
            try:
                verdict = await guard.check(input, self.llm)
            except (StructuredOutputError, ValidationError) as exc:
                verdict = Verdict(ok=False, reason=f"invalid verdict: {exc}"[:2000])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                verdict = Verdict(ok=False, reason=f"{type(exc).__name__}: {exc}"[:2000])
            s.set_attribute("loom.pattern.outcome", "pass" if verdict.ok else "fail")
            return verdict

    async def check(self, input: Any) -> GuardrailsResult:
        """Runs the guards only (no task)."""
        return await self.run(input)

    async def run(
        self, input: Any, task: Callable[[Any], Awaitable[Any] | Any] | None = None
    ) -> GuardrailsResult:
        """Runs every guard on ``input`` concurrently, then ``task(input)`` if all pass.

        Returns:
            A :class:`GuardrailsResult`; a failed guard is a result, not an exception.

        Raises:
            Whatever ``task`` raises.
        """
        with workflow_span("guardrails", self.name) as wf:
            wf.set_attribute("loom.pattern.guards", len(self.guards))
            content_attr(wf, "loom.pattern.input", input)
            result = await self._run_guards(input)
            if not result.ok:
                wf.set_attribute("loom.pattern.outcome", "blocked")
                wf.set_attribute("loom.pattern.failed_guard", result.failed_guard or "")
                return result
            if task is not None:
                with span("guardrails task", "guardrails"):
                    result.output = await resolve(task(input))
                result.ran_task = True
                content_attr(wf, "loom.pattern.output", result.output)
            wf.set_attribute("loom.pattern.outcome", "passed")
            return result

    async def _run_guards(self, input: Any) -> GuardrailsResult:
        start = time.monotonic()
        tasks = {asyncio.ensure_future(self._guarded(g, input)): g.name for g in self.guards}
        pending = set(tasks)
        verdicts: dict[str, Verdict] = {}
        deadline = None if self.timeout is None else start + self.timeout
        try:
            while pending:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, pending = await asyncio.wait(
                    pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # the overall timeout
                    late = sorted((tasks[t] for t in pending), key=self._index)
                    await cancel_all(list(pending))
                    also = f" (also late: {', '.join(late[1:])})" if len(late) > 1 else ""
                    return GuardrailsResult(
                        ok=False,
                        failed_guard=late[0],
                        reason=f"no verdict within {self.timeout}s{also}",
                        verdicts=verdicts,
                        cancelled=late,
                        elapsed=time.monotonic() - start,
                    )
                # Among guards finishing together, report the first one listed.
                finished = sorted(done, key=lambda t: self._index(tasks[t]))
                for t in finished:
                    verdicts[tasks[t]] = t.result()
                failed = next((t for t in finished if not t.result().ok), None)
                if failed is not None:
                    cancelled = sorted((tasks[t] for t in pending), key=self._index)
                    await cancel_all(list(pending))
                    return GuardrailsResult(
                        ok=False,
                        failed_guard=tasks[failed],
                        reason=failed.result().reason or "failed (no reason given)",
                        verdicts=verdicts,
                        cancelled=cancelled,
                        elapsed=time.monotonic() - start,
                    )
        except BaseException:
            await cancel_all(list(tasks))
            raise
        return GuardrailsResult(ok=True, verdicts=verdicts, elapsed=time.monotonic() - start)

    def _index(self, name: str) -> int:
        return next(i for i, g in enumerate(self.guards) if g.name == name)


class BusGuardrails(Guardrails):
    """:class:`Guardrails` whose guards are agents (see :class:`BusGuard`): each
    answers a ``guard`` request with ``{"ok": bool, "reason": str}``.

    Args:
        ctx: The context the requests are sent from.
        topics: Guard topics, as a list (the topic is the guard's name) or a mapping
            ``{name: topic}``.
        guard_timeout: Seconds each guard's reply may take.
        **options: As for :class:`Guardrails` (``timeout``, ``name``, more ``guards``).
    """

    def __init__(
        self,
        ctx: AgentContext,
        topics: Sequence[str] | Mapping[str, str],
        *,
        guard_timeout: float = DEFAULT_BUS_TIMEOUT,
        guards: Sequence[Guard | GuardFn] = (),
        **options: Any,
    ) -> None:
        pairs = list(topics.items()) if isinstance(topics, Mapping) else [(t, t) for t in topics]
        bus: list[Guard | GuardFn] = [
            BusGuard(name, ctx=ctx, topic=topic, timeout=guard_timeout) for name, topic in pairs
        ]
        super().__init__([*bus, *guards], **options)
        self.ctx = ctx


__all__ = [
    "BusGuard",
    "BusGuardrails",
    "FunctionGuard",
    "Guard",
    "GuardFn",
    "Guardrails",
    "GuardrailsResult",
    "LLMGuard",
    "LLMVerdict",
    "Verdict",
]

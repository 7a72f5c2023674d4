"""Prompt chaining with confidence gates.

A :class:`Chain` runs its steps in order. Each step produces a pydantic model (an LLM
call through ``llm.call_json``, an agent reached over the bus, or a function); a
:class:`Gate` after a step checks a confidence field and/or a predicate, and a failed
gate stops the chain early with a typed :class:`ChainResult`::

    chain = Chain(
        [
            Step("extract", EventInfo, instructions="Is this a calendar event?",
                 gate=Gate(min_confidence=0.7, predicate=lambda e: e.is_event,
                           reason="not a calendar event")),
            Step("details", EventDetails, instructions="Extract the details."),
        ],
        llm=llm,
    )
    result = await chain.run("Meet Alice next Tuesday at 2pm")
    if not result.ok:
        log.warning("chain stopped at %s: %s", result.failed_step, result.reason)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError

from loom._aio import resolve
from loom.llm.errors import StructuredOutputError
from loom.patterns._common import (
    DEFAULT_BUS_TIMEOUT,
    ChatModel,
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

M = TypeVar("M", bound=BaseModel)

#: Why a chain stopped early.
ChainFailure = Literal["gate", "invalid_output"]


@dataclass
class ChainState:
    """What a step sees: the chain's input and the outputs of the steps before it."""

    input: Any
    outputs: dict[str, BaseModel] = field(default_factory=dict)

    @property
    def last(self) -> BaseModel | None:
        """The previous step's output (``None`` for the first step)."""
        return next(reversed(self.outputs.values()), None)

    def get(self, step: str, model: type[M]) -> M:
        """The output of ``step``, typed as ``model``.

        Raises:
            KeyError: ``step`` has not run.
            TypeError: its output is not a ``model``.
        """
        return _typed(self.outputs[step], model, step)


def _typed(value: Any, model: type[M], what: str) -> M:
    if not isinstance(value, model):
        raise TypeError(f"{what}: output is {type(value).__name__}, not {model.__name__}")
    return value


class Gate(BaseModel):
    """Accepts a step's output or rejects it (ending the chain) with a reason.

    Both checks are optional; when both are given, both must pass.

    Example:
        >>> Gate(min_confidence=0.7, predicate=lambda e: e.is_event, reason="not an event")
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Reject when the output's confidence is below this (or missing)."""
    confidence_field: str = "confidence"
    """Name of the output's confidence field (a number in 0..1)."""
    predicate: Callable[[Any], bool] | None = None
    """Reject when ``predicate(output)`` is false."""
    reason: str = "the output did not pass the gate's predicate"
    """The rejection reason given when ``predicate`` fails."""

    def confidence(self, output: BaseModel) -> float | None:
        """The output's confidence, if it has a numeric one."""
        value = getattr(output, self.confidence_field, None)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    def evaluate(self, output: BaseModel) -> str | None:
        """``None`` when ``output`` passes, else the reason it is rejected."""
        if self.min_confidence is not None:
            conf = self.confidence(output)
            if conf is None or math.isnan(conf):
                return f"no numeric {self.confidence_field!r} in the output"
            if conf < self.min_confidence:
                return f"{self.confidence_field} {conf:.2f} is below {self.min_confidence:.2f}"
        if self.predicate is not None and not self.predicate(output):
            return self.reason
        return None


class ChainStep(ABC):
    """One step of a chain: produces an ``output`` model from the :class:`ChainState`.

    Args:
        name: Unique within the chain; the key of its output.
        output: The pydantic model the step produces.
        gate: Checked after the step; a rejection ends the chain.
    """

    def __init__(self, name: str, output: type[BaseModel], *, gate: Gate | None = None) -> None:
        if not name:
            raise PatternConfigError("a chain step needs a name")
        if not (isinstance(output, type) and issubclass(output, BaseModel)):
            raise PatternConfigError(f"step {name!r}: output must be a pydantic model class")
        if (
            gate is not None
            and gate.min_confidence is not None
            and gate.confidence_field not in output.model_fields
        ):
            raise PatternConfigError(
                f"step {name!r}: the gate reads {gate.confidence_field!r}, which "
                f"{output.__name__} does not have"
            )
        self.name = name
        self.output = output
        self.gate = gate

    @abstractmethod
    async def run(self, state: ChainState, llm: ChatModel | None) -> BaseModel:
        """Produces this step's output.

        Raises:
            StructuredOutputError: an LLM gave no valid output (the chain reports it).
            pydantic.ValidationError: an agent's reply does not fit ``output`` (idem).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.output.__name__})"


def default_prompt(state: ChainState) -> str:
    """The input, plus the previous step's output as JSON when there is one."""
    last = state.last
    if last is None:
        return to_text(state.input)
    prev = next(reversed(state.outputs))
    return f"Input:\n{to_text(state.input)}\n\nResult of step {prev!r}:\n{last.model_dump_json()}"


class Step(ChainStep):
    """A step answered by an LLM through ``llm.call_json(messages, schema=output)``.

    Args:
        name: Unique within the chain.
        output: The pydantic model the LLM must produce.
        instructions: The system prompt.
        prompt: Builds the user message from the state (default: the input, plus the
            previous step's output as JSON).
        gate: Checked after the step.
        llm: The model for this step (default: the chain's).
        max_attempts: Answers ``call_json`` tries before giving up.
    """

    def __init__(
        self,
        name: str,
        output: type[BaseModel],
        *,
        instructions: str,
        prompt: Callable[[ChainState], str] | None = None,
        gate: Gate | None = None,
        llm: ChatModel | None = None,
        max_attempts: int | None = None,
    ) -> None:
        super().__init__(name, output, gate=gate)
        self.instructions = instructions
        self.prompt = prompt or default_prompt
        self.llm = llm
        self.max_attempts = max_attempts

    async def run(self, state: ChainState, llm: ChatModel | None) -> BaseModel:
        model = self.llm or llm
        if model is None:  # Chain checks this up front; kept for direct use.
            raise PatternConfigError(f"step {self.name!r} has no llm")
        convo = messages(self.instructions, self.prompt(state))
        return await model.call_json(convo, self.output, max_attempts=self.max_attempts)


class BusStep(ChainStep):
    """A step answered by an agent: a request to ``topic``; the reply's payload is
    validated as ``output``.

    The request (type ``chain.step``) carries ``{"step", "input", "previous",
    "outputs"}`` (JSON data) unless ``payload`` builds something else.

    Args:
        name: Unique within the chain.
        output: The pydantic model the reply must fit.
        ctx: The context the request is sent from.
        topic: Where the step's agent listens.
        gate: Checked after the step.
        payload: Builds the request payload from the state.
        timeout: Seconds to wait for the reply (``RequestTimeout`` after).
    """

    def __init__(
        self,
        name: str,
        output: type[BaseModel],
        *,
        ctx: AgentContext,
        topic: str,
        gate: Gate | None = None,
        payload: Callable[[ChainState], Any] | None = None,
        timeout: float = DEFAULT_BUS_TIMEOUT,
    ) -> None:
        super().__init__(name, output, gate=gate)
        self.ctx = ctx
        self.topic = topic
        self.payload = payload
        self.timeout = timeout

    def _payload(self, state: ChainState) -> Any:
        if self.payload is not None:
            return self.payload(state)
        last = state.last
        return {
            "step": self.name,
            "input": to_jsonable(state.input),
            "previous": to_jsonable(last) if last is not None else None,
            "outputs": {k: to_jsonable(v) for k, v in state.outputs.items()},
        }

    async def run(self, state: ChainState, llm: ChatModel | None) -> BaseModel:
        reply = await self.ctx.request(
            self.topic, "chain.step", self._payload(state), timeout=self.timeout
        )
        data = reply_payload(reply, self.topic)
        if isinstance(data, str):
            return self.output.model_validate_json(data)
        return self.output.model_validate(data)


class FunctionStep(ChainStep):
    """A step computed by your function ``fn(state)`` (sync or async), e.g. a lookup
    between two LLM steps. Its return value is validated as ``output``."""

    def __init__(
        self,
        name: str,
        output: type[BaseModel],
        fn: Callable[[ChainState], BaseModel | dict[str, Any] | Awaitable[Any]],
        *,
        gate: Gate | None = None,
    ) -> None:
        super().__init__(name, output, gate=gate)
        self.fn = fn

    async def run(self, state: ChainState, llm: ChatModel | None) -> BaseModel:
        value = await resolve(self.fn(state))
        if isinstance(value, self.output):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump()
        return self.output.model_validate(value)


class ChainResult(BaseModel):
    """The outcome of :meth:`Chain.run`.

    ``ok`` is true when every step ran and passed its gate; then ``output`` is the last
    step's output. Otherwise ``failed_step`` names the step that stopped the chain,
    ``failure`` says how (``"gate"``: its gate rejected the output; ``"invalid_output"``:
    no valid output could be had) and ``reason`` says why.
    """

    ok: bool
    output: SerializeAsAny[BaseModel] | None = None
    """The last step's output (``None`` unless ``ok``)."""
    outputs: dict[str, SerializeAsAny[BaseModel]] = Field(default_factory=dict)
    """Every output produced, by step name, in order (a rejected output included)."""
    failed_step: str | None = None
    failure: ChainFailure | None = None
    reason: str | None = None
    confidence: float | None = None
    """The failed step's confidence, when its gate reads one."""

    def output_as(self, model: type[M]) -> M:
        """The final output, typed as ``model``.

        Raises:
            TypeError: the chain did not succeed, or its output is not a ``model``.
        """
        if not self.ok:
            raise TypeError(f"the chain stopped at {self.failed_step!r}: {self.reason}")
        return _typed(self.output, model, "chain")

    def get(self, step: str, model: type[M]) -> M:
        """The output of ``step``, typed as ``model`` (``KeyError`` if it did not run)."""
        return _typed(self.outputs[step], model, step)


class Chain:
    """Runs steps in order, stopping at the first gate that rejects.

    Args:
        steps: The steps (LLM :class:`Step`, :class:`BusStep`, :class:`FunctionStep`,
            or your own :class:`ChainStep`), with unique names.
        llm: The model for LLM steps that have none of their own.
        name: Names the run's span (``invoke_workflow {name}``).

    Raises:
        PatternConfigError: no steps, duplicate names, or an LLM step without a model.
    """

    def __init__(
        self, steps: Sequence[ChainStep], *, llm: ChatModel | None = None, name: str = "chain"
    ) -> None:
        self.steps = list(steps)
        if not self.steps:
            raise PatternConfigError("a chain needs at least one step")
        seen: set[str] = set()
        for s in self.steps:
            if not isinstance(s, ChainStep):
                raise PatternConfigError(f"not a chain step: {s!r}")
            if s.name in seen:
                raise PatternConfigError(f"two chain steps are named {s.name!r}")
            seen.add(s.name)
            if isinstance(s, Step) and s.llm is None and llm is None:
                raise PatternConfigError(f"step {s.name!r} has no llm and the chain has none")
        self.llm = llm
        self.name = name

    async def run(self, input: Any) -> ChainResult:
        """Runs the chain on ``input`` (text, a model, or JSON data).

        Returns:
            A :class:`ChainResult`; a gate rejection or an invalid output is a result
            with ``ok=False``, not an exception.

        Raises:
            Whatever a step raises besides invalid output: LLM transport errors
            (``loom.llm.LLMError``), ``RequestTimeout``, :class:`RemoteError`.
        """
        state = ChainState(input)
        with workflow_span("chain", self.name) as wf:
            wf.set_attribute("loom.pattern.steps", len(self.steps))
            content_attr(wf, "loom.pattern.input", input)
            for step in self.steps:
                result = await self._run_step(step, state)
                if result is not None:
                    wf.set_attribute("loom.pattern.outcome", result.failure or "error")
                    wf.set_attribute("loom.pattern.failed_step", step.name)
                    return result
            wf.set_attribute("loom.pattern.outcome", "ok")
            final = state.last
            content_attr(wf, "loom.pattern.output", final)
            return ChainResult(ok=True, output=final, outputs=dict(state.outputs))

    async def _run_step(self, step: ChainStep, state: ChainState) -> ChainResult | None:
        """Runs one step; a :class:`ChainResult` when the chain must stop there."""
        with span(f"chain step {step.name}", "chain", step=step.name) as s:
            try:
                output = await step.run(state, self.llm)
            except (StructuredOutputError, ValidationError) as exc:
                s.set_attribute("loom.pattern.outcome", "invalid_output")
                return ChainResult(
                    ok=False,
                    outputs=dict(state.outputs),
                    failed_step=step.name,
                    failure="invalid_output",
                    reason=f"invalid output: {exc}"[:2000],
                )
            state.outputs[step.name] = output
            content_attr(s, "loom.pattern.output", output)
            gate = step.gate
            if gate is None:
                s.set_attribute("loom.pattern.outcome", "ok")
                return None
            confidence = gate.confidence(output)
            if confidence is not None:
                s.set_attribute("loom.pattern.confidence", confidence)
            reason = gate.evaluate(output)
            if reason is None:
                s.set_attribute("loom.pattern.outcome", "ok")
                return None
            s.set_attribute("loom.pattern.outcome", "gate")
            return ChainResult(
                ok=False,
                outputs=dict(state.outputs),
                failed_step=step.name,
                failure="gate",
                reason=reason,
                confidence=confidence,
            )


__all__ = [
    "BusStep",
    "Chain",
    "ChainFailure",
    "ChainResult",
    "ChainState",
    "ChainStep",
    "FunctionStep",
    "Gate",
    "Step",
]

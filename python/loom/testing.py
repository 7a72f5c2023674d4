"""Test doubles for code that calls LLMs, and a guard against real network calls.

:class:`ScriptedModel` answers from a list; :class:`FunctionModel` from your function.
Both implement :class:`loom.llm.types.ChatModel`, the protocol patterns and cognitive
agents take, plus the rest of a provider's conveniences (``stream``, ``generate``,
``generate_json``, ``estimate_cost``, ``with_options``, ``aclose``), so they go wherever
a provider goes, and both record every call in ``.calls`` for assertions::

    from loom.testing import ScriptedModel, tool_call

    llm = ScriptedModel([tool_call("web:search", query="loom"), "Loom is a runtime."])
    first = await llm.call(messages=[...])   # first.tool_calls[0].name == "web:search"
    second = await llm.call(messages=[...])  # second.content == "Loom is a runtime."

:func:`block_network` makes any provider request to a non-loopback host raise
:class:`NetworkBlockedError` instead of quietly spending money::

    with block_network():
        ...  # a forgotten LLMProvider.from_name(ctx, "openai") fails loudly here
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loom.llm import NetworkBlockedError, block_network
from loom.llm.config import LLMConfig
from loom.llm.cost import Totals, estimate_tokens
from loom.llm.quirks import QUIRKS
from loom.llm.streaming import response_events
from loom.llm.types import (
    ChatModel,
    FinishEvent,
    LLMResponse,
    Message,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageEvent,
)

T = TypeVar("T")

#: What a script entry or a FunctionModel function may return.
ScriptItem = str | LLMResponse | ToolCall | list[ToolCall] | dict[str, Any] | BaseException

_ids = itertools.count(1)


def tool_call(name: str, arguments: dict[str, Any] | None = None, /, **kwargs: Any) -> ToolCall:
    """A :class:`ToolCall` for scripts: ``tool_call("web:search", query="x")``."""
    args = dict(arguments or {})
    args.update(kwargs)
    return ToolCall.from_raw(f"call_test_{next(_ids)}", name, args)


@dataclass
class RecordedCall:
    """One call a test model received."""

    messages: list[dict[str, Any]]
    tools: list[Any] | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    stream: bool = False

    @property
    def last_user_text(self) -> str:
        """Text of the last user message (handy in FunctionModel functions)."""
        for m in reversed(self.messages):
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                return str(m["content"])
        return ""


def _as_dict(m: Message | dict[str, Any]) -> dict[str, Any]:
    return m.model_dump(exclude_none=True) if isinstance(m, Message) else dict(m)


def to_response(item: ScriptItem, *, model: str, prompt_tokens: int) -> LLMResponse:
    """Turn a script item into an :class:`LLMResponse` (exceptions are raised)."""
    if isinstance(item, BaseException):
        raise item
    if isinstance(item, LLMResponse):
        resp = item
    elif isinstance(item, str):
        resp = LLMResponse(content=item, finish_reason="stop")
    elif isinstance(item, ToolCall):
        resp = LLMResponse(tool_calls=[item], finish_reason="tool_calls")
    elif isinstance(item, list):
        resp = LLMResponse(tool_calls=list(item), finish_reason="tool_calls")
    elif isinstance(item, dict):
        if "name" in item and "content" not in item:
            resp = LLMResponse(
                tool_calls=[tool_call(item["name"], item.get("arguments") or {})],
                finish_reason="tool_calls",
            )
        else:
            resp = LLMResponse.model_validate(item)
    else:
        raise TypeError(f"cannot turn {type(item).__name__} into an LLM response")
    updates: dict[str, Any] = {"model": resp.model or model, "provider": resp.provider or "test"}
    if not resp.id:
        updates["id"] = f"test-{next(_ids)}"
    if resp.usage == Usage():
        completion = estimate_tokens(resp.content) + sum(
            estimate_tokens(tc.raw_arguments) for tc in resp.tool_calls
        )
        updates["usage"] = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            total_tokens=prompt_tokens + completion,
            estimated=True,
        )
    return resp.model_copy(update=updates)


class _TestModel(ChatModel):
    """What the test models share: the :class:`ChatModel` methods, answered by
    :meth:`_respond`, and a provider's conveniences."""

    def __init__(self, name: str, model: str) -> None:
        self.name = name
        self.config = LLMConfig(name=name, base_url="http://test.invalid/v1", model=model)
        self.quirks = QUIRKS["generic"]
        self.calls: list[RecordedCall] = []
        self.closed = False
        self._totals = Totals()

    @property
    def model(self) -> str:
        """The model name reported in responses."""
        return self.config.model

    @property
    def usage(self) -> Totals:
        """Usage of this test model."""
        return self._totals

    async def _respond(self, call: RecordedCall) -> LLMResponse:
        raise NotImplementedError

    def _record(
        self, messages: Sequence[Message | dict[str, Any]], kwargs: dict[str, Any], stream: bool
    ) -> RecordedCall:
        tools = kwargs.pop("tools", None)
        call = RecordedCall(
            [_as_dict(m) for m in messages],
            list(tools) if tools is not None else None,
            kwargs,
            stream,
        )
        self.calls.append(call)
        return call

    def _prompt_tokens(self, call: RecordedCall) -> int:
        return sum(estimate_tokens(str(m.get("content") or "")) for m in call.messages)

    async def call(
        self, messages: Sequence[Message | dict[str, Any]], **kwargs: Any
    ) -> LLMResponse:
        """Answer like :meth:`LLMProvider.call`."""
        call = self._record(messages, dict(kwargs), stream=False)
        resp = await self._respond(call)
        self._totals.calls += 1
        self._totals.usage = self._totals.usage + resp.usage
        return resp

    async def stream_events(
        self, messages: Sequence[Message | dict[str, Any]], **kwargs: Any
    ) -> AsyncIterator[StreamEvent]:
        """Stream like :meth:`LLMProvider.stream_events` (text split at spaces)."""
        call = self._record(messages, dict(kwargs), stream=True)
        resp = await self._respond(call)
        self._totals.calls += 1
        self._totals.usage = self._totals.usage + resp.usage
        for part in re.findall(r"\S+\s*|\s+", resp.content):
            yield TextDelta(part)
        for i, tc in enumerate(resp.tool_calls):
            yield ToolCallStart(i, tc.id, tc.name)
            yield ToolCallDelta(i, tc.to_wire()["function"]["arguments"])
        for i, tc in enumerate(resp.tool_calls):
            yield ToolCallComplete(i, tc)
        yield UsageEvent(resp.usage)
        yield FinishEvent(resp.finish_reason, resp)

    async def stream(
        self, messages: Sequence[Message | dict[str, Any]], **kwargs: Any
    ) -> AsyncIterator[str]:
        """Stream text deltas like :meth:`LLMProvider.stream`."""
        async for event in self.stream_events(messages, **kwargs):
            if isinstance(event, TextDelta):
                yield event.text

    async def call_json(
        self,
        messages: Sequence[Message | dict[str, Any]],
        schema: type[T] | dict[str, Any],
        *,
        max_attempts: int | None = None,
        **kwargs: Any,
    ) -> T:
        """Like :meth:`LLMProvider.call_json`: script JSON text as the answer."""
        from loom.llm.structured import call_json

        return await call_json(self, messages, schema, max_attempts=max_attempts, **kwargs)

    async def generate(self, prompt: str, **kwargs: Any) -> str:
        """Seed-000 style: prompt in, text out."""
        return (await self.call([{"role": "user", "content": prompt}], **kwargs)).content

    async def generate_json(self, prompt: str, schema: type[T], **kwargs: Any) -> T:
        """Seed-000 style: prompt in, validated object out."""
        return await self.call_json([{"role": "user", "content": prompt}], schema, **kwargs)

    def count_tokens(self, text: str) -> int:
        """Estimated tokens in ``text``."""
        return estimate_tokens(text)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int = 0) -> float:
        """Test models are free."""
        return 0.0

    def with_options(self, **overrides: Any) -> _TestModel:
        """Returns the same model (scripts are shared)."""
        return self

    async def aclose(self) -> None:
        """Mark closed."""
        self.closed = True

    async def __aenter__(self) -> _TestModel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class ScriptedModel(_TestModel):
    """Answers calls from a script, in order.

    Each item is a string (text answer), a :class:`ToolCall` or list of them (tool-call
    answer), a dict (``{"name", "arguments"}`` for a tool call, or an ``LLMResponse``
    shape), an :class:`LLMResponse`, or an exception instance to raise.

    Args:
        script: The answers.
        repeat_last: Keep giving the last answer when the script runs out (otherwise a
            call past the end fails the test with an AssertionError).
        model: Model name reported in responses.
    """

    def __init__(
        self,
        script: Iterable[ScriptItem],
        *,
        repeat_last: bool = False,
        model: str = "scripted",
        name: str = "scripted",
    ) -> None:
        super().__init__(name, model)
        self.script: list[ScriptItem] = list(script)
        self.repeat_last = repeat_last
        self._next = 0

    @property
    def remaining(self) -> int:
        """Answers not yet given."""
        return max(0, len(self.script) - self._next)

    async def _respond(self, call: RecordedCall) -> LLMResponse:
        if self._next >= len(self.script):
            if self.repeat_last and self.script:
                item = self.script[-1]
            else:
                raise AssertionError(
                    f"ScriptedModel got call #{len(self.calls)} but its script has only "
                    f"{len(self.script)} answers; last user message: {call.last_user_text!r}"
                )
        else:
            item = self.script[self._next]
            self._next += 1
        return to_response(item, model=self.model, prompt_tokens=self._prompt_tokens(call))


ResponderFn = Callable[[RecordedCall], ScriptItem | Awaitable[ScriptItem]]


class FunctionModel(_TestModel):
    """Answers each call with ``function(call)`` (sync or async), where ``call`` is a
    :class:`RecordedCall` with ``messages``, ``tools``, ``kwargs`` and ``last_user_text``.
    The function returns anything a :class:`ScriptedModel` script item may be."""

    def __init__(
        self, function: ResponderFn, *, model: str = "function", name: str = "function"
    ) -> None:
        super().__init__(name, model)
        self.function = function

    async def _respond(self, call: RecordedCall) -> LLMResponse:
        item = self.function(call)
        if inspect.isawaitable(item):
            item = await item
        return to_response(item, model=self.model, prompt_tokens=self._prompt_tokens(call))


__all__ = [
    "FunctionModel",
    "NetworkBlockedError",
    "RecordedCall",
    "ScriptedModel",
    "block_network",
    "response_events",
    "tool_call",
]

"""The model a :class:`~loom.cognitive.CognitiveAgent` talks to: any object with an
async ``call(messages, **kwargs)``.

A full :class:`~loom.llm.types.ChatModel` (a provider, a ``loom.testing`` model) is used
as it is. Anything less — the original Loom's test double had only ``call`` — is
wrapped in :class:`CallModel`, which supplies what is missing from what is there:
``stream_events`` makes one call and streams its text as one delta (then the tool
calls, then the finish event), ``count_tokens`` is Loom's estimate
(:func:`loom.llm.cost.estimate_tokens`), ``call_json`` validates the call's text.
Methods the object does have are used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypeVar

from loom._aio import resolve
from loom.errors import LoomError
from loom.llm.cost import estimate_tokens
from loom.llm.streaming import response_events
from loom.llm.types import (
    ChatModel,
    LLMResponse,
    Message,
    StreamEvent,
)

M = TypeVar("M")


class CallableModel(Protocol):
    """The least a model must have: an async ``call`` answering with an
    :class:`~loom.llm.types.LLMResponse` (a plain string is taken as its text)."""

    async def call(self, messages: Any, **kwargs: Any) -> Any: ...


class CallModel(ChatModel):
    """A :class:`ChatModel` made from an object that may have only ``call``."""

    def __init__(self, wrapped: Any) -> None:
        #: The object given (its own methods are used where it has them).
        self.wrapped = wrapped

    async def call(
        self, messages: Sequence[Message | dict[str, Any]], **kwargs: Any
    ) -> LLMResponse:
        return _response(await resolve(self.wrapped.call(messages, **kwargs)))

    async def stream_events(
        self, messages: Sequence[Message | dict[str, Any]], **kwargs: Any
    ) -> AsyncIterator[StreamEvent]:
        own = getattr(self.wrapped, "stream_events", None)
        if callable(own):
            async for event in own(messages, **kwargs):
                yield event
            return
        for event in response_events(await self.call(messages, **kwargs)):
            yield event

    async def call_json(
        self,
        messages: Sequence[Message | dict[str, Any]],
        schema: type[M],
        *,
        max_attempts: int | None = None,
        **kwargs: Any,
    ) -> M:
        own = getattr(self.wrapped, "call_json", None)
        if callable(own):
            result: M = await own(messages, schema, max_attempts=max_attempts, **kwargs)
            return result
        from loom.llm.structured import call_json

        return await call_json(self, messages, schema, max_attempts=max_attempts, **kwargs)

    def count_tokens(self, text: str) -> int:
        own = getattr(self.wrapped, "count_tokens", None)
        if callable(own):
            return int(own(text))
        return estimate_tokens(text)

    def __repr__(self) -> str:
        return f"CallModel({type(self.wrapped).__name__})"


def _response(value: Any) -> LLMResponse:
    if isinstance(value, LLMResponse):
        return value
    if isinstance(value, str):
        return LLMResponse(content=value, finish_reason="stop")
    raise LoomError(
        f"the model's call() returned {type(value).__name__}, not an LLMResponse (or a string)"
    )


def chat_model(llm: Any) -> ChatModel:
    """``llm`` as a :class:`ChatModel`: itself if it is one, else wrapped.

    Raises:
        TypeError: ``llm`` has no ``call`` method.
    """
    if isinstance(llm, ChatModel):
        return llm
    if not callable(getattr(llm, "call", None)):
        raise TypeError(
            f"llm must be a chat model with an async call(messages, **kwargs) method "
            f"(an LLMProvider, a loom.testing model or a double of your own), not "
            f"{type(llm).__name__}"
        )
    return CallModel(llm)


__all__ = ["CallModel", "CallableModel", "chat_model"]

"""Request and response models: ``Message``, ``ToolCall``, ``Usage``, ``LLMResponse``, the
typed events of :meth:`LLMProvider.stream_events`, and :class:`ChatModel`, the protocol
every model (a provider, a test double) implements.

Response models tolerate unknown fields (servers add their own) and keep the decoded body
in ``LLMResponse.raw``. Stream events are plain slotted dataclasses: a stream creates one
per chunk, and that path is hot.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, Union, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loom._depth import text_too_deep, value_too_deep

Role = Literal["system", "user", "assistant", "tool", "developer"]


class ToolCall(BaseModel):
    """A function call requested by the model.

    ``arguments`` is the parsed JSON object; ``raw_arguments`` the string the server sent.
    When that string is not a JSON object, ``arguments`` is ``{}`` and ``arguments_error``
    says why, so the agent can report it back to the model instead of crashing.
    """

    model_config = ConfigDict(extra="allow")

    id: str = ""
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw_arguments: str = ""
    arguments_error: str | None = None
    type: Literal["function"] = "function"

    @classmethod
    def from_raw(cls, id: str, name: str, raw: str | dict[str, Any] | None) -> ToolCall:
        """Build from a wire tool call, parsing and tolerating bad argument strings."""
        args, text, err = parse_arguments(raw)
        return cls(id=id, name=name, arguments=args, raw_arguments=text, arguments_error=err)

    def to_wire(self) -> dict[str, Any]:
        """The OpenAI wire shape (``arguments`` as a JSON string, as every server expects)."""
        raw = self.raw_arguments if self.arguments_error else json.dumps(self.arguments)
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": raw},
        }


def parse_arguments(raw: str | dict[str, Any] | None) -> tuple[dict[str, Any], str, str | None]:
    """Parse tool-call arguments the way real servers send them.

    Handles ``None`` and ``""`` (no arguments), an object instead of a string (Ollama), a
    ``{}`` placeholder followed by the real object (``"{}{\\"q\\": 1}"``, seen from some
    streaming servers) and surrounding whitespace. Arguments nested deeper than
    :data:`loom._depth.MAX_DEPTH` levels are an error (measured before parsing, so a
    hostile reply cannot exhaust the parser's recursion).
    """
    if raw is None:
        return {}, "", None
    if isinstance(raw, dict):
        problem = value_too_deep(raw)
        if problem:
            return {}, "{}", f"arguments are {problem}"
        return raw, json.dumps(raw), None
    text = raw.strip()
    if not text:
        return {}, raw, None
    problem = text_too_deep(text)
    if problem:
        return {}, raw, f"arguments are {problem}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        if text.startswith("{}") and len(text) > 2:
            try:
                value = json.loads(text[2:])
            except ValueError:
                return {}, raw, f"arguments are not valid JSON: {exc}"
        else:
            return {}, raw, f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return {}, raw, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, raw, None


class Message(BaseModel):
    """A chat message. Dicts in the OpenAI shape are accepted wherever a Message is."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    """DeepSeek's chain of thought; sent back only where the provider needs it."""

    @classmethod
    def system(cls, content: str) -> Message:
        """A system message."""
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str) -> Message:
        """A user message."""
        return cls(role="user", content=content)

    @classmethod
    def tool_result(cls, tool_call_id: str, content: str, name: str | None = None) -> Message:
        """The result of a tool call, to append after the assistant's tool-call message."""
        return cls(role="tool", tool_call_id=tool_call_id, content=content, name=name)


class Usage(BaseModel):
    """Token counts of one call (or a sum of calls).

    Indexable like the seed's dict (``usage["prompt_tokens"]``). ``cached_tokens`` are
    prompt tokens served from the provider's prompt cache; ``reasoning_tokens`` are
    completion tokens spent thinking.
    """

    model_config = ConfigDict(extra="allow")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    """True when the server sent no usage (llama.cpp streams) and Loom counted instead:
    completion tokens = streamed chunks, prompt tokens = characters / 4."""

    @model_validator(mode="after")
    def _fill_total(self) -> Usage:
        # Usage(prompt_tokens=10, completion_tokens=5), as test doubles write it, has a
        # total too.
        if not self.total_tokens and (self.prompt_tokens or self.completion_tokens):
            self.total_tokens = self.prompt_tokens + self.completion_tokens
        return self

    @property
    def input_tokens(self) -> int:
        """Alias of ``prompt_tokens`` (GenAI semantic-convention name)."""
        return self.prompt_tokens

    @property
    def output_tokens(self) -> int:
        """Alias of ``completion_tokens``."""
        return self.completion_tokens

    def __getitem__(self, key: str) -> int:
        value = getattr(self, key, None)
        if not isinstance(value, int) or isinstance(value, bool):
            raise KeyError(key)
        return value

    def get(self, key: str, default: int = 0) -> int:
        """Dict-style access with a default."""
        try:
            return self[key]
        except KeyError:
            return default

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
        )

    @classmethod
    def from_wire(cls, data: dict[str, Any] | None) -> Usage:
        """Decode an OpenAI ``usage`` object, including the nested token details and
        DeepSeek's ``prompt_cache_hit_tokens``."""
        if not data:
            return cls()
        prompt = int(data.get("prompt_tokens") or 0)
        completion = int(data.get("completion_tokens") or 0)
        cached = 0
        details = data.get("prompt_tokens_details")
        if isinstance(details, dict):
            cached = int(details.get("cached_tokens") or 0)
        if not cached and data.get("prompt_cache_hit_tokens"):
            cached = int(data["prompt_cache_hit_tokens"])
        reasoning = 0
        cdetails = data.get("completion_tokens_details")
        if isinstance(cdetails, dict):
            reasoning = int(cdetails.get("reasoning_tokens") or 0)
        total = int(data.get("total_tokens") or (prompt + completion))
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
        )


class LLMResponse(BaseModel):
    """The answer of one chat completion.

    ``content`` is ``""`` when the model only called tools. ``raw`` holds the decoded
    response body (for a stream: the last chunk) and is left out of ``repr``.
    """

    model_config = ConfigDict(extra="allow")

    content: str = ""
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    model: str = ""
    id: str = ""
    reasoning_content: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)
    provider: str = ""
    """The provider that answered (a fallback's name if the primary failed)."""
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    cached: bool = False
    """Served from Loom's response cache."""

    @property
    def message(self) -> Message:
        """This answer as an assistant :class:`Message`, to append to the conversation."""
        return Message(
            role="assistant",
            content=self.content if (self.content or not self.tool_calls) else None,
            tool_calls=list(self.tool_calls) or None,
            reasoning_content=self.reasoning_content,
        )

    @property
    def text(self) -> str:
        """Alias of ``content``."""
        return self.content


# -- stream events ------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str
    type: Literal["text"] = "text"


@dataclass(slots=True, frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning (DeepSeek ``reasoning_content``)."""

    text: str
    type: Literal["reasoning"] = "reasoning"


@dataclass(slots=True, frozen=True)
class ToolCallStart:
    """The model started tool call number ``index``."""

    index: int
    id: str
    name: str
    type: Literal["tool_call_start"] = "tool_call_start"


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """A fragment of tool call ``index``'s JSON arguments."""

    index: int
    arguments_delta: str
    type: Literal["tool_call_delta"] = "tool_call_delta"


@dataclass(slots=True, frozen=True)
class ToolCallComplete:
    """Tool call ``index`` is complete; ``tool_call.arguments`` is parsed."""

    index: int
    tool_call: ToolCall
    type: Literal["tool_call_complete"] = "tool_call_complete"


@dataclass(slots=True, frozen=True)
class UsageEvent:
    """Token usage of the whole stream (sent by the server near the end)."""

    usage: Usage
    type: Literal["usage"] = "usage"


@dataclass(slots=True, frozen=True)
class FinishEvent:
    """The stream ended; ``response`` is the assembled :class:`LLMResponse`."""

    finish_reason: str | None
    response: LLMResponse = field(repr=False)
    type: Literal["finish"] = "finish"


StreamEvent = Union[  # noqa: UP007 - a runtime alias; `X | Y` of classes needs 3.10 anyway
    TextDelta,
    ReasoningDelta,
    ToolCallStart,
    ToolCallDelta,
    ToolCallComplete,
    UsageEvent,
    FinishEvent,
]

# -- the model protocol -------------------------------------------------------------------

M = TypeVar("M")


@runtime_checkable
class ChatModel(Protocol):
    """What Loom's patterns and :class:`~loom.cognitive.CognitiveAgent` use of a model.

    :class:`~loom.llm.LLMProvider`, :class:`loom.testing.ScriptedModel` and
    :class:`loom.testing.FunctionModel` implement it; so can a test double of your own
    (four methods, no base class needed).
    """

    async def call(
        self, messages: Sequence[Message | dict[str, Any]], **kwargs: Any
    ) -> LLMResponse:
        """One chat completion (``tools``, ``tool_choice``, ``temperature``... as keywords)."""
        ...

    def stream_events(
        self, messages: Sequence[Message | dict[str, Any]], **kwargs: Any
    ) -> AsyncIterator[StreamEvent]:
        """The same completion as typed events, ending with a :class:`FinishEvent`."""
        ...

    async def call_json(
        self,
        messages: Sequence[Message | dict[str, Any]],
        schema: type[M],
        *,
        max_attempts: int | None = None,
        **kwargs: Any,
    ) -> M:
        """A completion validated against ``schema`` (raises ``StructuredOutputError``)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Estimated tokens in ``text`` (for memory budgets)."""
        ...


__all__ = [
    "ChatModel",
    "FinishEvent",
    "LLMResponse",
    "Message",
    "ReasoningDelta",
    "Role",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallComplete",
    "ToolCallDelta",
    "ToolCallStart",
    "Usage",
    "UsageEvent",
    "parse_arguments",
]

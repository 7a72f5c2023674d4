"""Server-sent events: decoding the byte stream, and assembling chunks into events.

:class:`SSEDecoder` turns bytes into ``data:`` payloads (any line ending, comments,
multi-line data, a missing final blank line). :class:`StreamAccumulator` turns decoded
chat-completion chunks into typed :mod:`~loom.llm.types` events and the final
:class:`~loom.llm.types.LLMResponse`, accumulating tool calls by index and tolerating what
real servers send: the name repeated in every delta (llama.cpp), arguments split at any
byte, ``arguments: null``, a ``{}`` placeholder before the real arguments, arguments sent
as an object, and chunks without an ``index``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic_core import from_json

from .errors import LLMResponseError
from .types import (
    FinishEvent,
    LLMResponse,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageEvent,
)

log = logging.getLogger("loom.llm")

DONE = b"[DONE]"


class SSEDecoder:
    """Incremental SSE decoder: feed bytes, get complete ``data`` payloads back."""

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the data payloads of every event they complete."""
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # CRLF (sse-starlette's default) and lone CR are both legal line endings.
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    out.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
                continue
            if line[:5] == b"data:":
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
            # Other fields (event:, id:, retry:) and ":" comments carry nothing we use.
        return out

    def close(self) -> list[bytes]:
        """End of input: return an event left without its final blank line, if any."""
        out = self.feed(b"\n\n") if (self._buf or self._data) else []
        self._buf = b""
        return out


class _ToolState:
    __slots__ = ("args", "id", "index", "name", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = ""
        self.name = ""
        self.args: list[str] = []
        self.started = False


class StreamAccumulator:
    """Assemble chat-completion chunks into events and a final response.

    Args:
        provider: Provider name, for errors and the response.
        name_map: Maps wire tool names back to the caller's names (``web__search`` →
            ``web:search``).
    """

    def __init__(
        self,
        provider: str = "",
        name_map: dict[str, str] | None = None,
        *,
        on_first_chunk: Callable[[], None] | None = None,
    ) -> None:
        self.provider = provider
        self._name_map = name_map or {}
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tools: dict[int, _ToolState] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model = ""
        self.id = ""
        self.done = False
        self.chunks = 0
        self.last: dict[str, Any] = {}
        self._on_first_chunk = on_first_chunk

    def feed_payload(self, payload: bytes) -> list[StreamEvent]:
        """Decode one SSE ``data`` payload and return its events."""
        if payload == DONE or payload.strip() == DONE:
            self.done = True
            return []
        try:
            chunk = from_json(payload)
        except ValueError as exc:
            raise LLMResponseError(
                f"{self.provider}: invalid JSON in stream: {exc}: {payload[:200]!r}",
                provider=self.provider,
            ) from None
        if not isinstance(chunk, dict):
            raise LLMResponseError(
                f"{self.provider}: stream chunk is not a JSON object: {payload[:200]!r}",
                provider=self.provider,
            )
        return self.feed(chunk)

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        """Take one decoded chunk; return the events it produced."""
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise LLMResponseError(
                f"{self.provider}: error in stream: {msg}", provider=self.provider
            )
        self.chunks += 1
        if self.chunks == 1 and self._on_first_chunk is not None:
            self._on_first_chunk()
        self.last = chunk
        if not self.id:
            self.id = chunk.get("id") or ""
        if not self.model:
            self.model = chunk.get("model") or ""
        events: list[StreamEvent] = []
        usage = chunk.get("usage")
        if usage:
            self.usage = Usage.from_wire(usage)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is not supported; ignore other choices
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self._text.append(text)
                events.append(TextDelta(text))
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                self._reasoning.append(reasoning)
                events.append(ReasoningDelta(reasoning))
            tcs = delta.get("tool_calls")
            if tcs:
                for tc in tcs:
                    self._tool_delta(tc, events)
            fr = choice.get("finish_reason")
            if fr:
                self.finish_reason = fr
        return events

    def _tool_delta(self, tc: dict[str, Any], events: list[StreamEvent]) -> None:
        index = tc.get("index")
        tc_id = tc.get("id") or ""
        state: _ToolState | None = None
        if isinstance(index, int):
            state = self._tools.get(index)
        elif tc_id:
            # No index (some servers): match by id, else it is a new call.
            state = next((s for s in self._tools.values() if s.id == tc_id), None)
            if state is None:
                index = len(self._tools)
        else:
            # Neither index nor id: a continuation of the latest call.
            index = max(self._tools) if self._tools else 0
            state = self._tools.get(index)
        if state is None:
            assert isinstance(index, int)
            state = self._tools[index] = _ToolState(index)
        if tc_id and not state.id:
            state.id = tc_id
        fn = tc.get("function") or {}
        name = fn.get("name")
        if name and not state.name:
            state.name = self._name_map.get(name, name)
        # A repeated name (llama.cpp sends it in every delta) is not appended.
        args = fn.get("arguments")
        if args is not None and not isinstance(args, str):
            import json

            args = json.dumps(args)
        if not state.started and state.name:
            state.started = True
            events.append(ToolCallStart(state.index, state.id, state.name))
            if state.args:
                events.append(ToolCallDelta(state.index, "".join(state.args)))
        if args:
            state.args.append(args)
            if state.started:
                events.append(ToolCallDelta(state.index, args))

    def tool_calls(self) -> list[ToolCall]:
        """The tool calls assembled so far, in index order."""
        out = []
        for index in sorted(self._tools):
            s = self._tools[index]
            out.append(ToolCall.from_raw(s.id or f"call_{index}", s.name, "".join(s.args)))
        return out

    def finish(self, *, estimate_prompt_tokens: int = 0) -> list[StreamEvent]:
        """End of stream: the tool-call-complete, usage and finish events.

        Raises:
            LLMResponseError: the stream ended before the server said it was complete
                (no ``[DONE]`` and no ``finish_reason``).
        """
        if not self.done and self.finish_reason is None:
            raise LLMResponseError(
                f"{self.provider}: stream ended before completion "
                f"(after {self.chunks} chunks, no finish_reason or [DONE])",
                provider=self.provider,
            )
        events: list[StreamEvent] = []
        calls = self.tool_calls()
        for index, call in zip(sorted(self._tools), calls, strict=True):
            if not call.name:
                raise LLMResponseError(
                    f"{self.provider}: tool call {index} in stream has no name",
                    provider=self.provider,
                )
            events.append(ToolCallComplete(index, call))
        usage = self.usage
        if usage is None:
            # Servers that ignore stream_options (llama.cpp) send no usage: count chunks.
            completion = sum(1 for _ in self._text) + sum(len(s.args) for s in self._tools.values())
            usage = Usage(
                prompt_tokens=estimate_prompt_tokens,
                completion_tokens=completion,
                total_tokens=estimate_prompt_tokens + completion,
                estimated=True,
            )
        events.append(UsageEvent(usage))
        response = LLMResponse(
            content="".join(self._text),
            finish_reason=self.finish_reason or ("tool_calls" if calls else "stop"),
            usage=usage,
            tool_calls=calls,
            model=self.model,
            id=self.id,
            reasoning_content="".join(self._reasoning) or None,
            raw=self.last,
            provider=self.provider,
        )
        events.append(FinishEvent(response.finish_reason, response))
        return events


def parse_completion(
    body: dict[str, Any], provider: str, name_map: dict[str, str] | None = None
) -> LLMResponse:
    """Decode a non-streamed chat completion body.

    Raises:
        LLMResponseError: the body has no ``choices[0].message``.
    """
    if "error" in body and not body.get("choices"):
        err = body["error"]
        msg = err.get("message", err) if isinstance(err, dict) else err
        raise LLMResponseError(f"{provider}: error in response body: {msg}", provider=provider)
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise LLMResponseError(
            f"{provider}: response has no choices[0].message: {str(body)[:300]}",
            provider=provider,
        ) from None
    if not isinstance(message, dict):
        raise LLMResponseError(
            f"{provider}: choices[0].message is not an object", provider=provider
        )
    name_map = name_map or {}
    calls: list[ToolCall] = []
    for i, tc in enumerate(message.get("tool_calls") or ()):
        fn = tc.get("function") or {}
        name = fn.get("name") or ""
        if not name:
            raise LLMResponseError(f"{provider}: tool call {i} has no name", provider=provider)
        calls.append(
            ToolCall.from_raw(
                tc.get("id") or f"call_{i}", name_map.get(name, name), fn.get("arguments")
            )
        )
    content = message.get("content")
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return LLMResponse(
        content=content or "",
        finish_reason=choice.get("finish_reason"),
        usage=Usage.from_wire(body.get("usage")),
        tool_calls=calls,
        model=body.get("model") or "",
        id=body.get("id") or "",
        reasoning_content=message.get("reasoning_content") or message.get("reasoning") or None,
        raw=body,
        provider=provider,
    )


def response_events(response: LLMResponse) -> list[StreamEvent]:
    """The events a stream would have produced for a whole response (cache hits, servers
    that ignore ``stream: true``, scripted models)."""
    events: list[StreamEvent] = []
    if response.reasoning_content:
        events.append(ReasoningDelta(response.reasoning_content))
    if response.content:
        events.append(TextDelta(response.content))
    for i, call in enumerate(response.tool_calls):
        events.append(ToolCallStart(i, call.id, call.name))
        if call.raw_arguments or call.arguments:
            events.append(
                ToolCallDelta(i, call.raw_arguments or call.to_wire()["function"]["arguments"])
            )
    for i, call in enumerate(response.tool_calls):
        events.append(ToolCallComplete(i, call))
    events.append(UsageEvent(response.usage))
    events.append(FinishEvent(response.finish_reason, response))
    return events


__all__ = ["SSEDecoder", "StreamAccumulator", "parse_completion", "response_events"]

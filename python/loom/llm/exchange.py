"""One attempt: send a request body, read the answer as stream events.

Both kinds of call end the same way — ``on_answer`` is told the assembled response, then
the last events follow, the very last a :class:`FinishEvent` carrying the response — so
that the attempt loop (:mod:`loom.llm.attempts`) treats calls and streams
alike, and an answer is accounted for even if its consumer stops before the last event.
A streamed answer's events come as the server sends them; a server that ignores
``stream: true`` and sends one JSON body is replayed as events.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import httpx
from pydantic_core import from_json

from . import _http
from .errors import LLMResponseError
from .streaming import SSEDecoder, StreamAccumulator, parse_completion, response_events
from .types import FinishEvent, LLMResponse, StreamEvent


async def complete(
    endpoint: _http.Endpoint,
    content: bytes,
    extra_headers: dict[str, str],
    timeout: float | None,
    name_map: dict[str, str],
    *,
    on_answer: Callable[[LLMResponse], None],
) -> AsyncGenerator[StreamEvent, None]:
    """A non-streamed completion: its finish event (a call needs no other)."""
    data = await _http.fetch_json(endpoint, content, extra_headers, timeout)
    response = parse_completion(data, endpoint.provider, name_map)
    on_answer(response)
    yield FinishEvent(response.finish_reason, response)


async def stream(
    endpoint: _http.Endpoint,
    content: bytes,
    extra_headers: dict[str, str],
    timeout: float | None,
    name_map: dict[str, str],
    *,
    prompt_tokens: int,
    on_first_chunk: Callable[[], None],
    on_answer: Callable[[LLMResponse], None],
) -> AsyncGenerator[StreamEvent, None]:
    """A streamed completion's events as they arrive.

    Args:
        prompt_tokens: The prompt's estimated size, for servers that send no usage.
        on_first_chunk: Called when the first content arrives (time to first token).
        on_answer: Called with the assembled response, before the last events.

    Raises:
        LLMResponseError: not an event stream, an oversized or truncated stream.
        LLMConnectionError: the connection broke mid-stream.
    """
    name = endpoint.provider
    response = await _http.open_attempt(endpoint, content, extra_headers, timeout)
    try:
        ctype = response.headers.get("content-type", "")
        if "event-stream" not in ctype:
            if "json" not in ctype:
                raise LLMResponseError(
                    f"{name}: expected text/event-stream, got {ctype or 'no'} content type",
                    provider=name,
                )
            answer = await _read_json(response, endpoint, name_map)
            on_answer(answer)
            for event in response_events(answer):
                yield event
            return
        decoder = SSEDecoder()
        acc = StreamAccumulator(name, name_map, on_first_chunk=on_first_chunk)
        limit = endpoint.max_response_bytes
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise LLMResponseError(
                        f"{name}: stream exceeds the limit of {limit} bytes", provider=name
                    )
                for payload in decoder.feed(chunk):
                    for event in acc.feed_payload(payload):
                        yield event
                if acc.done:
                    break
        except _http.TRANSPORT_ERRORS as exc:
            raise _http.map_transport_error(exc, name, str(response.url)) from None
        for payload in decoder.close():
            for event in acc.feed_payload(payload):
                yield event
        final = acc.finish(estimate_prompt_tokens=prompt_tokens)
        finish = final[-1]
        assert isinstance(finish, FinishEvent)
        on_answer(finish.response)
        for event in final:
            yield event
    finally:
        await response.aclose()


async def _read_json(
    response: httpx.Response, endpoint: _http.Endpoint, name_map: dict[str, str]
) -> LLMResponse:
    """The server ignored ``stream: true`` and sent one JSON body."""
    name = endpoint.provider
    raw = await _http.read_body(response, endpoint.max_response_bytes, name)
    try:
        data = from_json(raw)
    except ValueError as exc:
        raise LLMResponseError(f"{name}: invalid JSON body: {exc}", provider=name) from None
    return parse_completion(data, name, name_map)


__all__ = ["complete", "stream"]

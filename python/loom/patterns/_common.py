"""What the patterns share: the model protocol (:class:`loom.llm.types.ChatModel`),
prompt text, bus replies and spans."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from loom.llm.types import ChatModel as ChatModel
from loom.patterns.errors import RemoteError

# The patterns' spans (``invoke_workflow``, one per step) live with the other spans.
from loom.telemetry.workflow_spans import content_attr as content_attr
from loom.telemetry.workflow_spans import pattern_span
from loom.telemetry.workflow_spans import workflow_span as workflow_span

if TYPE_CHECKING:
    from loom._core import Envelope

R = TypeVar("R")

#: A span for one step of a pattern (:func:`loom.telemetry.workflow_spans.pattern_span`).
span = pattern_span

#: Seconds a pattern waits for an agent's reply by default.
DEFAULT_BUS_TIMEOUT = 30.0


def to_text(value: Any) -> str:
    """Prompt text for a pattern input: strings as they are, models and data as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON data, for a bus payload (models are dumped)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return str(value)


def messages(instructions: str, prompt: str) -> list[dict[str, Any]]:
    """A system + user conversation."""
    return [
        {"role": "system", "content": instructions},
        {"role": "user", "content": prompt},
    ]


def reply_payload(reply: Envelope, topic: str) -> Any:
    """The payload of an agent's reply; an ``error`` reply raises :class:`RemoteError`.

    JSON text and bytes payloads are decoded (they arrive that way across processes).
    """
    if reply.type == "error":
        raise RemoteError(topic, reply.payload)
    payload = reply.payload
    if isinstance(payload, (bytes, bytearray)):
        payload = payload.decode("utf-8", errors="replace")
    if isinstance(payload, str) and payload[:1] in "{[":
        try:
            return json.loads(payload)
        except ValueError:
            return payload
    return payload


async def cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancels ``tasks`` and waits until they have really stopped."""
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def gather_or_cancel(coros: Sequence[Awaitable[R]]) -> list[R]:
    """Like ``asyncio.gather``, but the first exception cancels the others (and is
    raised once they have stopped) instead of leaving them running."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        await cancel_all(tasks)
        raise
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    if failed:
        await cancel_all([t for t in tasks if not t.done()])
        exc = failed[0].exception()
        assert exc is not None
        raise exc
    return [t.result() for t in tasks]

"""Structured output: ``call_json`` asks for JSON matching a schema and validates it.

Strategy per provider (from the quirks table): ``response_format`` ``json_schema`` where
supported (OpenAI, OpenRouter, Ollama); llama.cpp's ``json_object`` + ``schema`` (a
grammar, so the output is schema-valid by construction); otherwise the schema goes into
a system instruction. Invalid output is re-asked with the validation error, up to
``max_attempts`` answers in all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from loom._depth import text_too_deep

from ._constants import DEFAULT_JSON_ATTEMPTS
from .errors import StructuredOutputError
from .types import Message

if TYPE_CHECKING:
    from ._request import MessageLike

T = TypeVar("T")

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def schema_of(schema: Any) -> tuple[dict[str, Any], str]:
    """JSON schema and a name for a pydantic model, any type, or a schema dict."""
    if isinstance(schema, dict):
        return schema, str(schema.get("title") or "response")
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema(), schema.__name__
    return TypeAdapter(schema).json_schema(), getattr(schema, "__name__", "response")


def extract_json(text: str) -> str:
    """The JSON part of a model's answer (strips code fences and surrounding prose)."""
    text = text.strip()
    m = _FENCE.search(text)
    if m:
        return m.group(1).strip()
    if text[:1] in "{[":
        return text
    for open_, close in (("{", "}"), ("[", "]")):
        start, end = text.find(open_), text.rfind(close)
        if start != -1 and end > start:
            return text[start : end + 1]
    return text


def validate(schema: Any, text: str) -> Any:
    """Parse and validate ``text``; raise ValueError/ValidationError on failure."""
    payload = extract_json(text)
    problem = text_too_deep(payload)
    if problem:
        raise ValueError(f"the answer is {problem}")
    if isinstance(schema, dict):
        value = json.loads(payload)
        required = schema.get("required") or []
        if schema.get("type") == "object":
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            missing = [k for k in required if k not in value]
            if missing:
                raise ValueError(f"missing required keys: {', '.join(missing)}")
        return value
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_validate_json(payload)
    return TypeAdapter(schema).validate_json(payload)


def _response_format(provider: Any, js: dict[str, Any], name: str) -> dict[str, Any] | None:
    quirks = provider.quirks
    use_schema = provider.config.json_schema
    if use_schema is None:
        use_schema = quirks.json_schema
    if use_schema:
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "response"
        return {"type": "json_schema", "json_schema": {"name": safe, "schema": js}}
    if quirks.json_object_schema:
        return {"type": "json_object", "schema": js}
    return None


async def call_json(
    provider: Any,
    messages: Sequence[MessageLike],
    schema: type[T] | dict[str, Any],
    *,
    max_attempts: int | None = None,
    **kwargs: Any,
) -> T:
    """See :meth:`loom.llm.LLMProvider.call_json`."""
    attempts = max_attempts or DEFAULT_JSON_ATTEMPTS
    js, name = schema_of(schema)
    fmt = _response_format(provider, js, name)
    convo: list[Any] = list(messages)
    instruction = (
        "Respond with only a JSON value (no prose, no code fence) that matches this JSON "
        f"schema:\n{json.dumps(js)}"
    )
    convo.insert(0, Message(role="system", content=instruction))
    if fmt is not None:
        kwargs.setdefault("response_format", fmt)
    last_text, last_error = "", ""
    for attempt in range(1, attempts + 1):
        response = await provider.call(convo, **kwargs)
        last_text = response.content
        try:
            return cast(T, validate(schema, last_text))
        except (ValueError, ValidationError) as exc:
            last_error = str(exc)
            if attempt == attempts:
                break
            convo.append(Message(role="assistant", content=last_text))
            convo.append(
                Message(
                    role="user",
                    content=(
                        "That answer is not valid. Fix it and answer with only the JSON.\n"
                        f"Error: {last_error[:1500]}"
                    ),
                )
            )
    raise StructuredOutputError(
        f"no valid {name} JSON after {attempts} attempts: {last_error[:500]}",
        raw_text=last_text,
        errors=last_error,
        attempts=attempts,
    )


__all__ = ["call_json", "extract_json", "schema_of", "validate"]

"""A call's options: read once from the caller's keywords (:func:`request`), kept as a
:class:`CallRequest`, and turned into the JSON body each provider's server accepts
(:func:`build_body`)."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from loom._secrets import safe_repr
from loom._units import seconds

from .config import LLMConfig
from .quirks import Quirks, serialize_messages, strip_bounds, tool_choice_spec, tool_spec
from .types import Message

MessageLike = Message | dict[str, Any]

#: Fields of OpenAI's chat completions request body that a call may pass as keywords
#: (``seed=7``) besides its named parameters; they go into the body as given. Anything
#: else is a ``TypeError`` (a typo must not be sent, or dropped, in silence); fields of
#: one provider only go in ``extra_body={...}``.
BODY_FIELDS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream_options",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)

_TOOL_NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOOL_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")


def wire_tool_name(name: str) -> str:
    """A tool name OpenAI accepts (``^[A-Za-z0-9_-]{1,64}$``): ``web:search`` → ``web__search``.

    Loom's tools are namespaced with ``:``, which OpenAI rejects; tool calls in responses
    are mapped back to the original name.
    """
    if _TOOL_NAME_OK.match(name):
        return name
    return _TOOL_NAME_BAD.sub("_", name.replace(":", "__"))[:64] or "tool"


@dataclass(repr=False)
class CallRequest:
    """One call's arguments, kept so that a fallback can rebuild the body for its own
    model and quirks. Its ``repr`` masks ``extra_headers`` values (:mod:`loom._secrets`)."""

    messages: list[MessageLike]
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: Any = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    max_retries: int | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return safe_repr(self)


def request(
    messages: Sequence[MessageLike],
    *,
    tools: Iterable[Any] | None = None,
    tool_choice: Any = None,
    response_format: Any = None,
    model: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: float | None = None,
    timeout_ms: float | None = None,
    max_retries: int | None = None,
    extra_headers: dict[str, str] | None = None,
    extra_body: dict[str, Any] | None = None,
    **fields: Any,
) -> CallRequest:
    """The options of one call (the keywords of :meth:`LLMProvider.call` and
    :meth:`LLMProvider.stream_events`). Other keywords must be OpenAI request body
    fields (:data:`BODY_FIELDS`).

    Raises:
        TypeError: ``messages`` is a string, a keyword is neither an option nor a body
            field, or ``timeout`` and ``timeout_ms`` are both given.
    """
    if isinstance(messages, (str, bytes)):  # type: ignore[unreachable]
        raise TypeError("messages must be a list of messages, not a string")
    unknown = sorted(k for k in fields if k not in BODY_FIELDS)
    if unknown:
        raise TypeError(unknown_keywords(unknown))
    timeout = seconds(timeout, timeout_ms, what="LLM call")
    if timeout is not None and not (_is_number(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    body = dict(extra_body or {})
    body.update(fields)
    return CallRequest(
        messages=list(messages),
        tools=list(tools) if tools is not None else None,
        tool_choice=tool_choice,
        response_format=response_format,
        model=model,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        max_retries=max_retries,
        extra_headers=dict(extra_headers or {}),
        extra_body=body,
    )


def prompt_messages(prompt: str, system: str | None = None) -> list[MessageLike]:
    """``generate(prompt, system=...)``'s conversation: the system message (if any), then
    the prompt as the user's."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, not {type(prompt).__name__}")
    if system is not None and not isinstance(system, str):
        raise TypeError(f"system must be a string, not {type(system).__name__}")
    messages: list[MessageLike] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    return messages


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def unknown_keywords(names: list[str]) -> str:
    """The message for keywords a call does not know."""
    if "stream" in names:
        return "unexpected keyword argument 'stream': use llm.stream(...) or llm.stream_events(...)"
    shown = ", ".join(repr(n) for n in names)
    plural = "s" if len(names) > 1 else ""
    return (
        f"unexpected keyword argument{plural} {shown}: not an option of the call nor a "
        "field of the OpenAI chat completions request; pass provider-specific fields as "
        f"extra_body={{{names[0]!r}: ...}}"
    )


P = ParamSpec("P")
S = TypeVar("S")
R = TypeVar("R")


def with_request_options(
    builder: Callable[P, CallRequest],
) -> Callable[[Callable[[S, CallRequest], R]], Callable[Concatenate[S, P], R]]:
    """Gives a method taking a :class:`CallRequest` the keywords of ``builder``
    (:func:`request`): the call options are declared once and read once, however many
    entry points take them. The wrapper's signature, for type checkers and ``help()``,
    is ``builder``'s."""
    params = list(inspect.signature(builder).parameters.values())
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)

    def decorate(method: Callable[[S, CallRequest], R]) -> Callable[Concatenate[S, P], R]:
        impl: Any = method
        if inspect.iscoroutinefunction(method):
            # Stays a coroutine function: the options are read when the call is awaited.
            async def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Any:
                return await impl(self, builder(*args, **kwargs))

            wrapper: Any = call
        else:

            def direct(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Any:
                return impl(self, builder(*args, **kwargs))

            wrapper = direct
        functools.update_wrapper(wrapper, method)
        del wrapper.__wrapped__
        wrapper.__signature__ = inspect.Signature(
            [self_param, *params], return_annotation=inspect.signature(method).return_annotation
        )
        typed: Callable[Concatenate[S, P], R] = wrapper
        return typed

    return decorate


def build_body(
    cfg: LLMConfig, quirks: Quirks, req: CallRequest, *, stream: bool, stream_usage: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """The request body, and the map from wire tool names back to the caller's."""
    body: dict[str, Any] = {
        "model": req.model or cfg.model,
        "messages": serialize_messages(req.messages, quirks),
    }
    name_map: dict[str, str] = {}
    for m in body["messages"]:
        for tc in m.get("tool_calls") or ():
            fn = tc.get("function")
            if isinstance(fn, dict) and fn.get("name"):
                wire = wire_tool_name(fn["name"])
                if wire != fn["name"]:
                    tc["function"] = {**fn, "name": wire}
    temperature = req.temperature if req.temperature is not None else cfg.temperature
    if temperature is not None:
        body["temperature"] = temperature
    max_tokens = req.max_tokens if req.max_tokens is not None else cfg.max_tokens
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if req.tools:
        specs = []
        for t in req.tools:
            spec = tool_spec(t)
            if quirks.max_schema_bound is not None and "parameters" in spec["function"]:
                params = strip_bounds(spec["function"]["parameters"], quirks.max_schema_bound)
                spec = {**spec, "function": {**spec["function"], "parameters": params}}
            fn = spec["function"]
            wire = wire_tool_name(fn["name"])
            if wire != fn["name"]:
                name_map[wire] = fn["name"]
                spec = {**spec, "function": {**fn, "name": wire}}
            specs.append(spec)
        body["tools"] = specs
    if req.tool_choice is not None:
        choice = tool_choice_spec(req.tool_choice)
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            fname = str(choice["function"].get("name", ""))
            choice = {**choice, "function": {**choice["function"], "name": wire_tool_name(fname)}}
        body["tool_choice"] = choice
    if req.response_format is not None:
        body["response_format"] = response_format_spec(req.response_format)
    if cfg.extra_body:
        body.update(cfg.extra_body)
    if req.extra_body:
        body.update(req.extra_body)
    if stream:
        body["stream"] = True
        if stream_usage:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return body, name_map


def response_format_spec(value: Any) -> Any:
    """A pydantic model class becomes a ``json_schema`` response format; anything else
    (``{"type": "json_object"}``...) passes through."""
    if isinstance(value, type):
        from pydantic import BaseModel

        if issubclass(value, BaseModel):
            name = _TOOL_NAME_BAD.sub("_", value.__name__)[:64] or "response"
            return {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": value.model_json_schema()},
            }
    return value


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """~characters / 4 over the messages' text (for limits and streams without usage)."""
    chars = 0
    for m in body["messages"]:
        c = m.get("content")
        if isinstance(c, str):
            chars += len(c)
        elif isinstance(c, list):
            chars += sum(len(p.get("text", "")) for p in c if isinstance(p, dict))
    return max(1, chars // 4)


__all__ = [
    "BODY_FIELDS",
    "CallRequest",
    "build_body",
    "estimate_prompt_tokens",
    "prompt_messages",
    "request",
    "wire_tool_name",
    "with_request_options",
]

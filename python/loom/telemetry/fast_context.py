"""OpenTelemetry's current context read and set through its ``ContextVar`` directly.

Why: every ``opentelemetry.context`` call (``get_current``, ``get_value``, ``attach``,
``detach``) goes through two or three Python frames (the API function, the runtime
context object, then the ``ContextVar``); Loom's span helpers make ~20 such calls per
bus request. When the API's runtime context is the default
``ContextVarsRuntimeContext`` (the only one the API ships), the same ``ContextVar`` is
read and set here, so user code, instrumentations and Loom see one current context:
SDK spans nest under Loom's and Loom's under theirs.

Any other runtime context (``OTEL_PYTHON_CONTEXT`` naming another entry point), or an
API whose internals differ, keeps the public functions. The runtime context is looked
up on every call (one dict read), so a replaced one is followed.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.context import Context

try:
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
except ImportError:  # pragma: no cover - an API without it: the public path
    ContextVarsRuntimeContext = None  # type: ignore[assignment,misc]


def _span_key() -> str:
    # The API keeps the key of the current span private; read it once from a context
    # that holds a span, so Loom's spans are found by trace.get_current_span().
    ctx = trace_api.set_span_in_context(trace_api.INVALID_SPAN, Context())
    (key,) = ctx.keys()
    return key


def _baggage_key() -> str | None:
    # Likewise the baggage key (None if the API's baggage is not where it was).
    ctx = otel_baggage.set_baggage("k", "v", Context())
    keys = list(ctx.keys())
    return keys[0] if len(keys) == 1 else None


SPAN_KEY = _span_key()
_dict_set = dict.__setitem__
BAGGAGE_KEY = _baggage_key()


#: The API module's namespace (read here, never written): its runtime context is
#: looked up in it on each call, without a function frame.
_API = vars(otel_context)


#: ContextVarsRuntimeContext, or a type no runtime context has (an API without it).
class _NoRuntime:
    """The type of no runtime context (the API has no ContextVarsRuntimeContext)."""


_VARS_RUNTIME: type = _NoRuntime if ContextVarsRuntimeContext is None else ContextVarsRuntimeContext


def context_var() -> ContextVar[Context] | None:
    """The ``ContextVar`` holding the current context when the API's runtime context is
    its default ``ContextVarsRuntimeContext``, else None (use the public API).

    The functions below repeat this test inline (one frame less per call)."""
    runtime = _API.get("_RUNTIME_CONTEXT")
    if type(runtime) is not _VARS_RUNTIME:
        return None
    var = getattr(runtime, "_current_context", None)
    return var if type(var) is ContextVar else None


def current() -> Context:
    """``opentelemetry.context.get_current()``."""
    runtime = _API.get("_RUNTIME_CONTEXT")
    if type(runtime) is _VARS_RUNTIME:
        var = getattr(runtime, "_current_context", None)
        if type(var) is ContextVar:
            return var.get()  # type: ignore[no-any-return]
    return otel_context.get_current()


def get_value(key: str, context: Context | None = None) -> object:
    """``opentelemetry.context.get_value(key, context)``."""
    if context is not None:
        return context.get(key)
    runtime = _API.get("_RUNTIME_CONTEXT")
    if type(runtime) is _VARS_RUNTIME:
        var = getattr(runtime, "_current_context", None)
        if type(var) is ContextVar:
            return var.get().get(key)
    return otel_context.get_current().get(key)


def current_span() -> trace_api.Span:
    """``opentelemetry.trace.get_current_span()``."""
    runtime = _API.get("_RUNTIME_CONTEXT")
    var = getattr(runtime, "_current_context", None) if type(runtime) is _VARS_RUNTIME else None
    ctx = var.get() if type(var) is ContextVar else otel_context.get_current()
    span = ctx.get(SPAN_KEY)
    if span is None or not isinstance(span, trace_api.Span):
        return trace_api.INVALID_SPAN
    return span


def has_baggage() -> bool:
    """``bool(opentelemetry.baggage.get_all())``."""
    if BAGGAGE_KEY is None:
        return bool(otel_baggage.get_all())
    runtime = _API.get("_RUNTIME_CONTEXT")
    var = getattr(runtime, "_current_context", None) if type(runtime) is _VARS_RUNTIME else None
    ctx = var.get() if type(var) is ContextVar else otel_context.get_current()
    value = ctx.get(BAGGAGE_KEY)
    return isinstance(value, dict) and bool(value)


def attach_value(key: str, value: object) -> object:
    """``attach(set_value(key, value))``: the current context with ``key`` set, made
    current; returns the token for :func:`detach`."""
    runtime = _API.get("_RUNTIME_CONTEXT")
    if type(runtime) is _VARS_RUNTIME:
        var = getattr(runtime, "_current_context", None)
        if type(var) is ContextVar:
            # set_value's copy and Context(copy), in one copy: a Context is a dict whose
            # mutators raise, so the key is set through dict's own.
            new = Context(var.get())
            _dict_set(new, key, value)
            return var.set(new)
    return otel_context.attach(otel_context.set_value(key, value))


def attach(context: Context) -> object:
    """``opentelemetry.context.attach(context)``."""
    var = context_var()
    return var.set(context) if var is not None else otel_context.attach(context)


def detach(token: Any) -> None:
    """``opentelemetry.context.detach(token)``; a token that cannot be reset (made in
    another context, or reset already) is handed to the API, which logs it."""
    if type(token) is Token:
        runtime = _API.get("_RUNTIME_CONTEXT")
        if type(runtime) is _VARS_RUNTIME:
            var = getattr(runtime, "_current_context", None)
            if type(var) is ContextVar:
                try:
                    var.reset(token)
                    return
                except (ValueError, RuntimeError):
                    pass
    otel_context.detach(token)


__all__ = [
    "BAGGAGE_KEY",
    "SPAN_KEY",
    "attach",
    "attach_value",
    "context_var",
    "current",
    "current_span",
    "detach",
    "get_value",
    "has_baggage",
]

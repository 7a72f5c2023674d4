"""``loom.llm``: an OpenAI-compatible LLM client over one pooled httpx client.

The seed's API keeps working::

    from loom.llm import LLMProvider

    llm = LLMProvider.from_name(agent.ctx, "deepseek")
    response = await llm.call(messages=[{"role": "user", "content": "hi"}])
    async for chunk in llm.stream(messages=[...]):
        ...

Names are imported lazily so that ``import loom`` stays fast: httpx, pydantic models and
OpenTelemetry load on first use. See docs/llm.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.telemetry import set_capture_content

    from ._http import NetworkBlockedError, block_network
    from ._request import BODY_FIELDS, wire_tool_name
    from .config import PRESETS, LLMConfig, Pricing
    from .cost import CostTracker, estimate_tokens
    from .errors import (
        AuthenticationError,
        BadRequestError,
        BudgetExceeded,
        LLMConnectError,
        LLMConnectionError,
        LLMError,
        LLMReadError,
        LLMResponseError,
        LLMStatusError,
        LLMTimeoutError,
        LocalServerError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitError,
        ServerError,
        StructuredOutputError,
    )
    from .local_server import LocalModelServer
    from .provider import LLMProvider
    from .state import LLMHost, LLMState
    from .types import (
        ChatModel,
        FinishEvent,
        LLMResponse,
        Message,
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

_EXPORTS: dict[str, str] = {
    "LLMProvider": "provider",
    "ChatModel": "types",
    "LLMState": "state",
    "LLMHost": "state",
    "wire_tool_name": "_request",
    "BODY_FIELDS": "_request",
    "block_network": "_http",
    "LLMConfig": "config",
    "Pricing": "config",
    "PRESETS": "config",
    "Message": "types",
    "LLMResponse": "types",
    "ToolCall": "types",
    "Usage": "types",
    "StreamEvent": "types",
    "TextDelta": "types",
    "ReasoningDelta": "types",
    "ToolCallStart": "types",
    "ToolCallDelta": "types",
    "ToolCallComplete": "types",
    "UsageEvent": "types",
    "FinishEvent": "types",
    "LLMError": "errors",
    "LLMConnectionError": "errors",
    "LLMConnectError": "errors",
    "LLMReadError": "errors",
    "LLMTimeoutError": "errors",
    "LLMStatusError": "errors",
    "AuthenticationError": "errors",
    "PermissionDeniedError": "errors",
    "NotFoundError": "errors",
    "BadRequestError": "errors",
    "RateLimitError": "errors",
    "ServerError": "errors",
    "LLMResponseError": "errors",
    "StructuredOutputError": "errors",
    "BudgetExceeded": "errors",
    "LocalServerError": "errors",
    "LocalModelServer": "local_server",
    "CostTracker": "cost",
    "estimate_tokens": "cost",
    "set_capture_content": ".telemetry",  # loom.telemetry: one switch for all content
    "NetworkBlockedError": "_http",
}

__all__ = [
    "BODY_FIELDS",
    "PRESETS",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceeded",
    "ChatModel",
    "CostTracker",
    "FinishEvent",
    "LLMConfig",
    "LLMConnectError",
    "LLMConnectionError",
    "LLMError",
    "LLMHost",
    "LLMProvider",
    "LLMReadError",
    "LLMResponse",
    "LLMResponseError",
    "LLMState",
    "LLMStatusError",
    "LLMTimeoutError",
    "LocalModelServer",
    "LocalServerError",
    "Message",
    "NetworkBlockedError",
    "NotFoundError",
    "PermissionDeniedError",
    "Pricing",
    "RateLimitError",
    "ReasoningDelta",
    "ServerError",
    "StreamEvent",
    "StructuredOutputError",
    "TextDelta",
    "ToolCall",
    "ToolCallComplete",
    "ToolCallDelta",
    "ToolCallStart",
    "Usage",
    "UsageEvent",
    "block_network",
    "estimate_tokens",
    "set_capture_content",
    "wire_tool_name",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None and name == "tracker":
        raise AttributeError(
            "loom.llm.tracker is gone: usage totals belong to a runtime "
            "(runtime.llm_state.usage; a provider's own: provider.usage, provider.state)"
        )
    if module is None:
        raise AttributeError(f"module 'loom.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

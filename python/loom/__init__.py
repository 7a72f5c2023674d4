"""Loom: an event-driven runtime for AI agents.

The Brain (this package) runs your agents in Python; the Hands (``loom._core``, Rust)
own the event bus and run tools sandboxed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom._core import Envelope
from loom._version import __version__
from loom.agent import Agent
from loom.bus import BusStats, EventBus, Subscription, SubscriptionStats, TopicStats
from loom.collab import ContractResult
from loom.config import ProjectConfig, load_project_config
from loom.context import AgentContext
from loom.errors import (
    AgentError,
    BusClosedError,
    BusError,
    BusFullError,
    ConfigError,
    DurabilityError,
    InvalidKeyError,
    InvalidTopicError,
    InvalidValueError,
    JournalError,
    KeyExistsError,
    KVClosedError,
    KVConflictError,
    KVError,
    LoomError,
    NonDeterminismError,
    RequestTimeout,
    RunCancelled,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolError,
    ToolFailed,
    ToolInDoubt,
    ToolNotFound,
    ToolTimeout,
    ValueTooLargeError,
)
from loom.runtime import Runtime

#: The context's names in earlier Loom code.
Context = EventContext = AgentContext

if TYPE_CHECKING:  # pragma: no cover
    from loom import llm as llm
    from loom.cognitive import CognitiveAgent as CognitiveAgent
    from loom.cognitive import CognitiveConfig as CognitiveConfig
    from loom.cognitive import ThinkingStrategy as ThinkingStrategy
    from loom.llm import LLMProvider as LLMProvider
    from loom.telemetry import init_telemetry as init_telemetry
    from loom.telemetry import shutdown_telemetry as shutdown_telemetry
    from loom.tools import PythonTool as Tool  # noqa: F401
    from loom.tools import tool as tool

__all__ = [
    "Agent",
    "AgentContext",
    "AgentError",
    "BusClosedError",
    "BusError",
    "BusFullError",
    "BusStats",
    "ConfigError",
    "ContractResult",
    "DurabilityError",
    "Envelope",
    "EventBus",
    "InvalidKeyError",
    "InvalidTopicError",
    "InvalidValueError",
    "JournalError",
    "KVClosedError",
    "KVConflictError",
    "KVError",
    "KeyExistsError",
    "LoomError",
    "NonDeterminismError",
    "ProjectConfig",
    "RequestTimeout",
    "RunCancelled",
    "Runtime",
    "Subscription",
    "SubscriptionStats",
    "ToolArgumentsInvalid",
    "ToolDenied",
    "ToolError",
    "ToolFailed",
    "ToolInDoubt",
    "ToolNotFound",
    "ToolTimeout",
    "TopicStats",
    "ValueTooLargeError",
    "__version__",
    "load_project_config",
]


#: Names from subpackages with heavier imports, loaded on first use (keeping
#: ``import loom`` fast): ``from loom import LLMProvider`` works as earlier Loom code
#: wrote it.
_LAZY: dict[str, tuple[str, str]] = {
    "LLMProvider": ("loom.llm", "LLMProvider"),
    "CognitiveAgent": ("loom.cognitive", "CognitiveAgent"),
    "CognitiveConfig": ("loom.cognitive", "CognitiveConfig"),
    "ThinkingStrategy": ("loom.cognitive", "ThinkingStrategy"),
    "init_telemetry": ("loom.telemetry", "init_telemetry"),
    "shutdown_telemetry": ("loom.telemetry", "shutdown_telemetry"),
    "tool": ("loom.tools", "tool"),
    "Tool": ("loom.tools", "PythonTool"),
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in {"llm", "tools", "telemetry", "patterns", "cognitive", "testing"}:
        return importlib.import_module(f"loom.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'loom' has no attribute {name!r}")

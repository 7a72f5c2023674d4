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
    InvalidTopicError,
    LoomError,
    RequestTimeout,
    ToolArgumentsInvalid,
    ToolDenied,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolTimeout,
)
from loom.runtime import Runtime

if TYPE_CHECKING:  # pragma: no cover
    from loom import llm as llm

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
    "Envelope",
    "EventBus",
    "InvalidTopicError",
    "LoomError",
    "ProjectConfig",
    "RequestTimeout",
    "Runtime",
    "Subscription",
    "SubscriptionStats",
    "ToolArgumentsInvalid",
    "ToolDenied",
    "ToolError",
    "ToolFailed",
    "ToolNotFound",
    "ToolTimeout",
    "TopicStats",
    "__version__",
    "load_project_config",
]


def __getattr__(name: str) -> Any:
    # Subpackages with heavier imports load on first use, keeping `import loom` fast.
    if name in {"llm", "tools", "telemetry", "patterns", "cognitive", "testing"}:
        import importlib

        return importlib.import_module(f"loom.{name}")
    raise AttributeError(f"module 'loom' has no attribute {name!r}")

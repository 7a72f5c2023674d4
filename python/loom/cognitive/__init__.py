"""Cognitive agents: an LLM that reasons, calls sandboxed tools, and remembers."""

from loom.cognitive.agent import CognitiveAgent
from loom.cognitive.memory import Memory
from loom.cognitive.model import CallableModel, CallModel
from loom.cognitive.types import (
    CognitiveConfig,
    CognitiveResult,
    RunFinished,
    Step,
    ThinkingStrategy,
    ToolResult,
)

__all__ = [
    "CallModel",
    "CallableModel",
    "CognitiveAgent",
    "CognitiveConfig",
    "CognitiveResult",
    "Memory",
    "RunFinished",
    "Step",
    "ThinkingStrategy",
    "ToolResult",
]

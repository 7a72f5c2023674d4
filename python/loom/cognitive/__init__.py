"""Cognitive agents: an LLM that reasons, calls sandboxed tools, and remembers."""

from loom.cognitive.agent import CognitiveAgent
from loom.cognitive.memory import Memory
from loom.cognitive.types import CognitiveConfig, CognitiveResult, RunFinished, Step, ToolResult

__all__ = [
    "CognitiveAgent",
    "CognitiveConfig",
    "CognitiveResult",
    "Memory",
    "RunFinished",
    "Step",
    "ToolResult",
]

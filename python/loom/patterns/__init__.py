"""Workflow patterns for LLM agents, typed with pydantic and async.

- :class:`Chain`: prompt chaining with confidence :class:`Gate` s.
- :class:`Router`: classify with a confidence threshold, dispatch, or reject.
- :class:`Guardrails`: concurrent checks; the first failure short-circuits.
- :class:`Orchestrator`: plan → concurrent workers → reviewer, bounded revisions.

Each has a multi-agent form over the bus (:class:`BusStep`, :class:`BusRouter`,
:class:`BusGuardrails`, :class:`BusOrchestrator`). Every pattern takes a
:class:`ChatModel` (:class:`loom.llm.types.ChatModel`): an ``LLMProvider``, a
``loom.testing`` model, or a double of your own. See docs/patterns.md.
"""

from __future__ import annotations

from loom.llm.types import ChatModel
from loom.patterns.chain import (
    BusStep,
    Chain,
    ChainResult,
    ChainState,
    ChainStep,
    FunctionStep,
    Gate,
    Step,
)
from loom.patterns.errors import OrchestratorError, PatternConfigError, PatternError, RemoteError
from loom.patterns.guardrails import (
    BusGuard,
    BusGuardrails,
    FunctionGuard,
    Guard,
    Guardrails,
    GuardrailsResult,
    LLMGuard,
    LLMVerdict,
    Verdict,
)
from loom.patterns.orchestrator import BusOrchestrator, Orchestrator, OrchestratorResult, Round
from loom.patterns.roles import (
    BusPlanner,
    BusReviewer,
    BusWorker,
    LLMPlanner,
    LLMReviewer,
    LLMWorker,
    Part,
    Plan,
    Planner,
    Review,
    Reviewer,
    Revision,
    Task,
    Worker,
)
from loom.patterns.router import (
    BusRouter,
    Rejection,
    Route,
    RouteDecision,
    Router,
    RouterResult,
)

__all__ = [
    "BusGuard",
    "BusGuardrails",
    "BusOrchestrator",
    "BusPlanner",
    "BusReviewer",
    "BusRouter",
    "BusStep",
    "BusWorker",
    "Chain",
    "ChainResult",
    "ChainState",
    "ChainStep",
    "ChatModel",
    "FunctionGuard",
    "FunctionStep",
    "Gate",
    "Guard",
    "Guardrails",
    "GuardrailsResult",
    "LLMGuard",
    "LLMPlanner",
    "LLMReviewer",
    "LLMVerdict",
    "LLMWorker",
    "Orchestrator",
    "OrchestratorError",
    "OrchestratorResult",
    "Part",
    "PatternConfigError",
    "PatternError",
    "Plan",
    "Planner",
    "Rejection",
    "RemoteError",
    "Review",
    "Reviewer",
    "Revision",
    "Round",
    "Route",
    "RouteDecision",
    "Router",
    "RouterResult",
    "Step",
    "Task",
    "Verdict",
    "Worker",
]

"""Configuration, results and stream events of a cognitive run."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WrapValidator

from loom.llm.types import Usage
from loom.prompts import Prompt

ToolChoice = str | dict[str, Any]


class ThinkingStrategy(str, Enum):
    """How a run reasons (the original Loom's names and values).

    - ``REACT``: the tool loop — think, call tools, read the results, until the model
      answers or ``max_iterations`` is reached. ``tool_mode`` picks how the model asks
      for tools (``auto``: native function calling; ``react``: the text protocol).
    - ``SINGLE_SHOT``: one LLM call, no tools offered; its text is the answer.
    - ``CHAIN_OF_THOUGHT`` (``"cot"``): one LLM call, no tools, told to reason step by
      step and end with ``Final Answer:``; the reasoning becomes a ``thought`` step and
      what follows the marker the answer (the whole text when there is no marker).
    """

    REACT = "react"
    SINGLE_SHOT = "single_shot"
    CHAIN_OF_THOUGHT = "cot"


#: Spellings accepted for :class:`ThinkingStrategy` (case-insensitive), as the
#: original accepted them.
_STRATEGY_NAMES: dict[str, ThinkingStrategy] = {
    "react": ThinkingStrategy.REACT,
    "single_shot": ThinkingStrategy.SINGLE_SHOT,
    "single-shot": ThinkingStrategy.SINGLE_SHOT,
    "singleshot": ThinkingStrategy.SINGLE_SHOT,
    "cot": ThinkingStrategy.CHAIN_OF_THOUGHT,
    "chain_of_thought": ThinkingStrategy.CHAIN_OF_THOUGHT,
    "chain-of-thought": ThinkingStrategy.CHAIN_OF_THOUGHT,
}
_VALUES = frozenset(s.value for s in ThinkingStrategy)


def _strategy(value: Any) -> Any:
    if isinstance(value, ThinkingStrategy):
        return value
    if isinstance(value, str):
        found = _STRATEGY_NAMES.get(value.strip().lower())
        if found is not None:
            return found
    raise ValueError(
        f"unknown thinking_strategy {value!r}; expected one of "
        f"{', '.join(repr(s.value) for s in ThinkingStrategy)} "
        f"(or {', '.join(repr(n) for n in _STRATEGY_NAMES if n not in _VALUES)})"
    )


def _final_answer_only(value: Any) -> Any:
    if value is False:
        raise ValueError(
            "stop_on_final_answer=False is not supported: a run ends when the model gives "
            "its final answer (the original Loom never read this setting either); bound "
            "the run with max_iterations instead"
        )
    return value


class CognitiveConfig(BaseModel):
    """How a :class:`~loom.cognitive.CognitiveAgent` thinks and acts.

    Unknown fields are an error (a misspelt setting must not be ignored).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    #: Text, or a :class:`loom.prompts.Prompt` loaded from a file (kept as one, so the
    #: ``chat`` spans name its file and version).
    system_prompt: Annotated[
        str, WrapValidator(lambda v, handler: v if isinstance(v, Prompt) else handler(v))
    ] = "You are a capable assistant. Use the tools when they help, then answer concisely."
    #: LLM turns per run before giving up with ``success=False``.
    max_iterations: int = Field(default=8, ge=1)
    #: Seconds each tool call may take.
    tool_timeout: float = Field(default=30.0, gt=0)
    #: ``native`` (function calling), ``react`` (text protocol, for models without
    #: tool calling) or ``auto`` (native when tools are offered).
    tool_mode: Literal["auto", "native", "react"] = "auto"
    #: ``tool_choice`` per LLM turn: one value for every turn, or a list (turn i uses
    #: item i, the last repeats). E.g. ``[{"type": "function", "function": {"name":
    #: "fs__read_file"}}, "none"]`` forces a read first and an answer next — what tiny
    #: local models need.
    tool_choice: ToolChoice | list[ToolChoice] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    #: Tokens of conversation history kept in the prompt; older turns are compacted
    #: into a summary.
    memory_tokens: int = Field(default=3000, ge=200)
    #: Tool outputs longer than this (characters) are saved to ``.loom/cache`` and only
    #: a preview goes into the prompt.
    offload_chars: int = Field(default=4000, ge=200)
    preview_chars: int = Field(default=800, ge=50)
    #: Summarise old history with the LLM (else keep an extractive summary).
    llm_compaction: bool = True
    #: How a run reasons; a :class:`ThinkingStrategy` or its value (``"react"``,
    #: ``"single_shot"``, ``"cot"``). ``react``, the default, is the tool loop.
    thinking_strategy: Annotated[ThinkingStrategy, BeforeValidator(_strategy)] = (
        ThinkingStrategy.REACT
    )
    #: Tool calls run from one model turn (None: all of them). The rest are answered
    #: with "not run: max_tools_per_step" so the model can ask again next turn.
    max_tools_per_step: int | None = Field(default=None, ge=1)
    #: A run stops at the model's final answer; only ``True`` is accepted (kept for
    #: the original Loom's configs).
    stop_on_final_answer: Annotated[bool, BeforeValidator(_final_answer_only)] = True


@dataclass
class Step:
    """One thing the agent did: a tool call (with its result or error) or an answer."""

    kind: Literal["tool", "answer", "thought"]
    iteration: int
    tool: str | None = None
    call_id: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    text: str = ""
    seconds: float = 0.0


@dataclass
class CognitiveResult:
    """The outcome of :meth:`CognitiveAgent.run`."""

    answer: str
    steps: list[Step]
    iterations: int
    success: bool
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    latency: float = 0.0
    cost_usd: float = 0.0

    @property
    def tool_calls(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "tool"]

    @property
    def total_latency_ms(self) -> float:
        """Wall-clock time of the run in milliseconds (``latency`` is in seconds)."""
        return self.latency * 1000.0


# -- stream events (besides the LLM's TextDelta / ToolCallStart / ToolCallDelta) ------


@dataclass(frozen=True)
class ToolResult:
    """A tool finished (``error`` set if it failed or was denied)."""

    call_id: str
    name: str
    result: Any
    error: str | None = None
    type: Literal["tool_result"] = "tool_result"


@dataclass(frozen=True)
class RunFinished:
    """The last event of ``run_stream``."""

    result: CognitiveResult
    type: Literal["result"] = "result"
